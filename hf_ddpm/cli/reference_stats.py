"""``hf-ddpm reference-stats``: the feature mean and covariance of a dataset's split, saved once for ``hf-ddpm
evaluate --reference`` (``hf_ddpm.metrics.reference_stats``); under ``accelerate launch`` each process judges its
share of the images."""

from __future__ import annotations

from .common import device_name, output_file, positive_int, process_state, torch_device


def add_reference_stats_parser(subparsers) -> None:
    parser = subparsers.add_parser("reference-stats", help="feature mean and covariance of a dataset, for FD/FID "
                                   "against it (evaluate --reference)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", default=None, help="'digits' or a datasets Hub id / folder")
    source.add_argument("--train-data-dir", default=None, help="an image folder (datasets' imagefolder)")
    parser.add_argument("--dataset-config", default=None, help="the dataset's configuration name")
    parser.add_argument("--image-column", default=None, help="default: the dataset's single Image column")
    parser.add_argument("--split", default="train", help="the split (default: train, as the DDPM paper's FID)")
    parser.add_argument("--resolution", type=positive_int, default=None,
                        help="resize (shorter side) and centre-crop to this size first (default: as stored)")
    parser.add_argument("--num-images", type=positive_int, default=None, help="default: the whole split")
    parser.add_argument("--feature-model", default=None, help="as for hf-ddpm evaluate: 'inception' (FID), a "
                        "transformers model, or the digits evaluator (default)")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="images per feature-network call")
    parser.add_argument("--out", type=output_file(), required=True, help="the .npz to write (mu, sigma, feature_model, source)")
    parser.add_argument("--device", type=torch_device, default=None, help="torch device (default: cuda if available, else cpu; under "
                                                       "accelerate launch each process's own device)")
    parser.set_defaults(func=run_reference_stats)


def run_reference_stats(args) -> None:
    from ..data import load_eval_images
    from ..distributed_eval import dataset_features
    from ..metrics.quality import QualityModels
    from ..metrics.reference_stats import ReferenceStats

    state = process_state()
    images = load_eval_images(dataset_name=args.dataset, dataset_config_name=args.dataset_config,
                              train_data_dir=args.train_data_dir, split=args.split, image_column=args.image_column,
                              resolution=args.resolution, num_images=args.num_images)
    try:
        models = QualityModels(args.feature_model, device=device_name(args.device), batch_size=args.batch_size,
                               progress=state.is_main_process)
    except OSError as error:  # a feature model that cannot be loaded
        raise ValueError(str(error)) from error
    features = dataset_features(models, images, state)
    if state.is_main_process:
        size = f"{images.resolution}×{images.resolution}"
        source = f"{images.name}, split {images.split!r}, {len(images)} images at {size}"
        ReferenceStats.of_features(features, models.feature_model, source).save(args.out)
        print(f"wrote the {features.shape[1]}-dimensional feature stats of {source} ({models.feature_model}) to "
              f"{args.out}")
