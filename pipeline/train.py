"""Stage `train@<variant>-<seed>`: fit one variant with one seed; keep its best val-loss checkpoint.

Reads:        <config> (stage check: the variant's run config, params.RunConfig:
              everything training reads but the seed), <split>/{train,val}.pt
              (stage split). params.yaml only for tracking.*, never a result.
Writes:       <out>, the checkpoint: the best state_dict, what evaluate needs to
              rebuild the model, and the run's history (one record per epoch).
One stage per variant and seed (dvc.yaml's `matrix:`), so adding a seed trains
that seed only. DVC runs one stage at a time; scripts/repro.py runs as many
train stages at once as the cores allow (`make run`). A seed's result depends
only on its run config, its seed and the split, never on what else ran beside
it. Nothing of one run's own (timings, MLflow ids) goes into the output: those
go to MLflow and to observations/ (pipeline/tracking.py).
"""

import argparse
import time
from pathlib import Path

from pipeline import cluster, tracking
from pipeline.checkpoint import Checkpoint, save_checkpoint
from pipeline.data import load_split, split_file
from pipeline.errors import PipelineError, declare_outputs, run_stage
from pipeline.fitting import fit_seed, load_splits
from pipeline.io import read_json
from pipeline.params import ParamsError, RunConfig, load_params


def train_seed(config, split_dir, seed, tracked=None):
    """Build and train one variant (its RunConfig) with one seed; return its Checkpoint.

    `tracked`: (params, dvc path of the checkpoint) to mirror the run into MLflow,
    or None. The seed's run is tagged with the checkpoint's MD5 (DVC's hash of
    the file) and its path: that tag, not an id inside the checkpoint, links the
    two. MLflow gets the model of train.seeds' first seed only, as a pyfunc that
    takes raw images (pipeline/serving.py): logging one takes seconds, and every
    seed's checkpoint is a DVC output anyway. With RAY_ADDRESS set the training
    itself runs as a task on a cluster node (pipeline/cluster.py); the rest
    happens here.
    """
    name = config.variant
    splits = load_splits(split_dir)
    label = f"{name}/seed{seed}"
    params, out_path = tracked or (None, None)
    meta = read_json(Path(split_dir) / "meta.json")
    with tracking.seed_run(params, config, seed) as run:
        for split, (images, labels) in splits.items():
            run.log_dataset(split_dir, split, images, labels, meta["dataset"])
        if cluster.address():
            node, fitted = cluster.run_on_node(
                fit_seed, config, splits, seed, label, threads=config.train.threads, name=f"train@{name}-{seed}"
            )
            for record in fitted.epochs:  # the node has no MLflow run: its epochs land here once it is done
                run.log_epoch(record)
            tracking.tag(run, "ray_node", node)
            print(f"train {label}: trained on node {node}", flush=True)
        else:
            node, fitted = None, fit_seed(config, splits, seed, label, on_epoch=run.log_epoch)
        tracking.observe(
            f"train/{name}/seed{seed}.json",
            {
                "seconds_per_epoch": [record["seconds"] for record in fitted.epochs],
                "threads": config.train.threads,
                "mlflow_run_id": run.run_id,
                "node": node,
            },
        )
        checkpoint = Checkpoint(
            variant=name,
            seed=seed,
            variant_params=config.architecture,
            model_params=config.model,
            state_dict=fitted.best_state,
            normalisation=fitted.normalisation,
            best_epoch=fitted.best_epoch,
            epochs_run=len(fitted.history),
            parameters=fitted.parameters,
            classes=meta["classes"],
            history=fitted.history,
        )
        if out_path is not None:
            save_checkpoint(out_path, checkpoint)
            # MLflow keeps one model per variant (the first seed's): it takes raw images
            run.record_checkpoint(checkpoint, out_path, with_model=seed == params.train.seeds[0])
    return checkpoint


def load_config(path):
    """The RunConfig stage check wrote; a damaged or outdated file is one line naming the way back."""
    try:
        return RunConfig.model_validate(read_json(path))
    except FileNotFoundError:
        raise
    except Exception as e:
        raise ParamsError(
            f"{path} is not a run config ({type(e).__name__}); stage check writes it: dvc repro --force check"
        ) from None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="the params file, for tracking.* only")
    parser.add_argument("--config", required=True, help="the variant's run config (stage check)")
    parser.add_argument("--seed", required=True, type=int, help="the seed: weights, data order, augmentation")
    parser.add_argument("--split", required=True, help="folder written by stage split")
    parser.add_argument("--out", required=True, help="the checkpoint file to write (seed<k>.pt)")
    args = parser.parse_args()
    declare_outputs(args.out)
    params = load_params(args.params)
    config = load_config(args.config)
    for split in ("train", "val"):  # a missing input fails before any run is opened in MLflow
        if not split_file(args.split, split).is_file():
            raise FileNotFoundError(2, "No such file", str(split_file(args.split, split)))
    train_size, batch_size = len(load_split(args.split, "train")[1]), config.train.batch_size
    if train_size < batch_size:
        raise PipelineError(
            f"the training split holds {train_size} images, fewer than one batch (train.batch_size "
            f"{batch_size}): lower train.batch_size or data.val_size"
        )
    if cluster.address():  # an unreachable cluster is one line before an MLflow run opens
        cluster.connect(cluster.address())
    start = time.perf_counter()
    train_seed(config, args.split, args.seed, (params, args.out))
    print(f"train {config.variant}/seed{args.seed}: {time.perf_counter() - start:.0f} s (observations/train/)")


if __name__ == "__main__":
    run_stage(main)
