"""tuneforge runner: recipe → model/data → train → run directory."""

__version__ = "0.1.0"


def _quiet_library_loggers() -> None:
    """bitsandbytes looks up an optional hub kernel as it is imported (by peft, transformers, ...) and
    logs two warnings on CPU ('Failed to load CPU gemm_4bit_forward from kernels-community ... pip
    install kernels', and offline 'Skipping publisher trust check ...'): noise for a user. Set here,
    before any of them is imported, in every process that uses tuneforge; `--debug` shows them again."""
    import logging

    for name in ("bitsandbytes", "kernels"):
        logging.getLogger(name).setLevel(logging.ERROR)


_quiet_library_loggers()
