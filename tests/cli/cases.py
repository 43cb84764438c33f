"""The arguments the command's tests share: a one-epoch ``train`` on the synthetic IDX data."""


def train_args(idx_dir, out, *extra):
    return [
        "train",
        "--data-dir",
        str(idx_dir),
        "--limit",
        "200",
        "--val-split",
        "40",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--no-progress",
        "--out",
        str(out),
        *extra,
    ]
