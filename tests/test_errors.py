from modelcrate.errors import EXIT_INPUT, InputError


def test_input_error_renders_what_where_and_fix() -> None:
    err = InputError("cannot read", path="/x/model.pkl", hint="check permissions")
    text = err.render()
    assert text.splitlines() == [
        "error[input]: cannot read",
        "  file: /x/model.pkl",
        "  hint: check permissions",
    ]
    assert err.exit_code == EXIT_INPUT
