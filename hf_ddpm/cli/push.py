"""``hf-ddpm push``: upload a trained output folder to the Hugging Face Hub (``hf_ddpm.hub``)."""

from __future__ import annotations


def add_push_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "push", help="push a trained output folder (pipeline, card, sample grids) to the Hugging Face Hub",
        description="Create the repo if needed and upload the saved pipeline, its model card (rendered for the repo "
                    "id), metrics and images in one commit. Checkpoints and optimizer state are never uploaded.")
    parser.add_argument("--folder", required=True, help="output folder of training/train.py (holds model_index.json)")
    parser.add_argument("--repo-id", required=True, help="'user/name', 'org/name' or 'name'")
    parser.add_argument("--token", default=None, help="Hub token (default: $HF_TOKEN or `hf auth login`'s)")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.set_defaults(func=run_push)


def run_push(args) -> None:
    """A bad folder or repo id is a ValueError (exit status 2); a failed push exits with status 1 and the reason."""
    from ..hub import HubPushError, push_output_folder

    try:
        url = push_output_folder(args.folder, args.repo_id, token=args.token, private=args.private)
    except HubPushError as err:
        raise SystemExit(f"hf-ddpm push: error: {err}") from None
    print(f"Pushed {args.folder} to {url}")
