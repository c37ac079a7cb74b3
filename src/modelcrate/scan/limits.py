"""Hard limits of the scanner. Exceeding one is a finding, never a crash or a hang."""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Explicit caps. The defaults fit real checkpoints and stop every bomb in the corpus."""

    # pickle machine
    max_pickle_ops: int = 20_000_000
    max_stack_depth: int = 100_000
    max_memo_entries: int = 1_000_000
    max_expansion_ratio: float = 1_000.0  # (values referenced) / (opcodes), billion laughs
    max_pickles_per_stream: int = 64  # concatenated pickles scanned in one file/member
    # containers
    max_depth: int = 6  # nested containers (zip in zip in tar ...)
    max_link_steps: int = 1_000_000  # components of link targets followed in one archive
    max_entries: int = 100_000  # members in one archive
    max_member_bytes: int = 512 * MiB  # a member read into memory for scanning
    max_inflated_bytes: int = 2048 * MiB  # total decompressed bytes per top-level file
    max_ratio: float = 200.0  # inflated / compressed, checked once past ratio_floor
    ratio_floor: int = 2 * MiB  # below this, no ratio verdict: small files compress oddly
    # formats
    max_header_bytes: int = 100_000_000  # safetensors' own cap
    max_string_bytes: int = 16 * MiB  # GGUF strings, JSON configs
    max_file_list: int = 1_000_000  # files walked in a directory
