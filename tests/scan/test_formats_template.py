"""Jinja chat-template SSTI (t45 class) and benign templates (#13)."""

from __future__ import annotations

import pytest

from modelcrate.scan.findings import Severity
from modelcrate.scan.template_ssti import find_ssti

BENIGN = {
    "llama3": (
        "{{ bos_token }}{% for message in messages %}{% if loop.first and message['role'] != "
        "'system' %}{{ '<|start_header_id|>system<|end_header_id|>\\n\\n' }}{% endif %}"
        "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + "
        "message['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
        "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
    ),
    "chatml": (
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
        "message['content'].strip() + '<|im_end|>' + '\\n'}}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    ),
    "mistral": (
        "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]"
        "['content'] %}{%- set loop_messages = messages[1:] %}{%- else %}{%- set "
        "loop_messages = messages %}{%- endif %}{{- bos_token }}{%- for message in "
        "loop_messages %}{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{- raise_exception('Conversation roles must alternate user/assistant') }}{%- endif %}"
        "{%- if message['role'] == 'user' %}{{- '[INST] ' + message['content'] + '[/INST]' }}"
        "{%- endif %}{%- endfor %}"
    ),
    "tools": (
        "{%- set ns = namespace(found=false, last_idx=-1) %}{%- for m in messages %}"
        "{%- if m.tool_calls is defined %}{%- set ns.found = true %}{%- endif %}"
        "{%- endfor %}{{ tools | tojson(indent=4) }}{{ ns.found }}"
        "{%- for t in m.tool_calls %}{{ t.function.name }}{{ t.function.arguments|tojson }}"
        "{%- endfor %}{{ messages[-1].content|replace('a', 'b')|lower }}"
    ),
    "literal_underscores": "{{ '<|reserved__special__token|>' + m['content'] }}{{ m.a_b }}",
}

ATTACKS = {
    "lipsum_globals": "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "cycler_init": "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "joiner_subscript": "{{ joiner.__init__['__globals__']['os'] }}",
    "namespace_init": "{{ namespace.__init__.__globals__ }}",
    "self_context": "{{ self._TemplateReference__context.cycler }}",
    "mro_subclasses": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "concat_tilde": "{{ lipsum['__glo' ~ 'bals__'] }}",
    "concat_plus": '{{ cycler["__in" + "it__"] }}',
    "hex_escape": "{{ cycler|attr('\\x5f\\x5finit\\x5f\\x5f') }}",
    "unicode_escape": "{{ cycler|attr('\\u005f\\u005finit\\u005f\\u005f') }}",
    "octal_escape": "{{ lipsum|attr('\\137\\137globals\\137\\137') }}",
    "join_filter": "{{ lipsum|attr(['__glob', 'als__']|join) }}",
    "reversed": "{{ lipsum|attr('__slabolg__'|reverse) }}",
    "upper": "{{ lipsum|attr('__GLOBALS__'|lower) }}",
    "attr_computed": "{% set a = x|first %}{{ cycler|attr(a) }}",
    "other_dunder": "{{ x.__weakref__ }}",
    "char_building": "{% set u = '%c'|format(95) %}{{ lipsum|attr(u*2 ~ 'globals' ~ u*2) }}",
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_t45_template_ssti(name: str) -> None:
    hits = find_ssti(ATTACKS[name])
    assert hits, name
    assert max(h.severity for h in hits) >= Severity.HIGH


def test_t45_template_ssti_dunder_is_critical() -> None:
    for name in ("lipsum_globals", "concat_tilde", "hex_escape", "reversed", "self_context"):
        assert max(h.severity for h in find_ssti(ATTACKS[name])) == Severity.CRITICAL, name


@pytest.mark.parametrize("name", sorted(BENIGN))
def test_benign_chat_templates(name: str) -> None:
    assert find_ssti(BENIGN[name]) == []


def test_template_include_is_medium() -> None:
    hits = find_ssti("{% include '/etc/passwd' %}")
    assert [(h.indicator, h.severity) for h in hits] == [
        ("template import/include", Severity.MEDIUM)
    ]
