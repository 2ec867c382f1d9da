"""Evaluate a checkpoint on its test identities: ``python eval.py ckpt_path=.../last.ckpt``.

The same entry point as ``python -m dcign.evaluate`` (conf/eval.yaml), beside ``train.py``.
"""

from dcign.evaluate import main

if __name__ == "__main__":
    main()
