"""The package's layout stays walkable: every module of fr_lib is at most
400 lines (split along responsibilities, not by line count), and the
modules that were split still answer to their old import paths."""
import importlib
import pathlib

import pytest

SRC = pathlib.Path(__file__).resolve().parents[1] / "fr_lib" / "src"
LIMIT = 400


def test_every_module_is_at_most_400_lines():
    sizes = {str(p.relative_to(SRC)): len(p.read_text(encoding="utf-8").splitlines())
             for p in SRC.rglob("*.py")}
    assert len(sizes) > 50  # the walk found the package
    over = {p: n for p, n in sizes.items() if n > LIMIT}
    assert not over, f"modules over {LIMIT} lines: {over}"


# every public name (``__all__``) of each module split in December 2026, as it
# was before the split: importable from the same path afterwards
BEFORE_SPLIT = {
    "fr_lib.train.trainer": [
        "TrainConfig", "FaceTrainer", "TrainResult", "NonFiniteError", "RENAMED_OPTIONS",
        "ArrayBatches", "RecordBatches", "train", "exclude_from_weight_decay", "read_log",
        "plot_log", "NO_WD_SUFFIXES"],
    "fr_lib.data.source": ["shard", "BatchSource", "Prefetcher", "ArrayBatches"],
    "fr_lib.data.dali": ["DALI_PIP", "dali_available", "write_dali_index", "DaliFaceIter"],
    "fr_lib.data.synthetic": ["SyntheticFaces", "write_dataset"],
    "fr_lib.data.cli": ["DataToolError", "COMMANDS", "main", "run_command", "tool_main"],
    "fr_lib.train.checkpoint": [
        "CheckpointError", "RunDirectoryError", "Checkpoint", "CheckpointManager", "RunLock",
        "read_checkpoint", "rng_state", "set_rng_state", "step_seed", "file_sha256",
        "disk_free"],
    "fr_lib.train.partial_fc": ["PartialFC", "PartialFCSample"],
    "fr_lib.train.objective": ["Objective", "objective_refusal", "HEADS"],
    "fr_lib.train.features": [
        "Objective", "build_objective", "OBJECTIVES", "FeatureResult", "FeatureTrunk",
        "train_trunk", "train_features", "extract_embeddings", "embedding_head"],
    "fr_lib.train.launch": ["launch_local", "cluster_env", "free_port", "heartbeat",
                            "LaunchError", "HEARTBEAT_TIMEOUT"],
    "fr_lib.metrics.verification": [
        "DEFAULT_THRESHOLDS", "DEFAULT_FARS", "pair_distances", "verification_accuracy",
        "VerificationAccuracy", "roc_curve", "RocCurve", "auc", "eer", "tar_at_far",
        "TarAtFar", "evaluate_verification", "VerificationReport"],
    "fr_lib.recipes": ["RECIPE_DIR", "list_recipes", "recipe_path", "load_recipe",
                       "apply_override", "validate_recipe", "check_recipe", "prepare_data",
                       "train_main"],
    "fr_lib.model_zoo.pretrained": [
        "INSIGHTFACE_MODELS", "INSIGHTFACE_URL", "read_pth", "read_onnx", "source_layers",
        "load_insightface_weights", "insightface_file", "load_pretrained",
        "insightface_state_dict", "save_pth"],
    "fr_lib.ops": ["NativeBuildError", "NativeExportError", "build", "load", "available",
                   "load_error", "use_native", "native_ops", "source_path", "library_path",
                   "plain_symbol"],
    "fr_lib.loss.margin": ["NormFaceLoss", "CosFaceLoss", "ArcFaceLoss",
                           "CombinedMarginLoss", "SphereFaceLoss"],
    "fr_lib.loss.advanced": ["SubCenterArcFaceLoss", "CurricularFaceLoss", "MagFaceLoss",
                             "AdaFaceLoss", "CircleLoss"],
    "fr_lib.loss.regularizer": ["L2SoftmaxLoss", "CenterLoss", "RingLoss", "LGMLoss",
                                "l2softmax_alpha_lower_bound"],
}


@pytest.mark.parametrize("module", sorted(BEFORE_SPLIT))
def test_split_modules_keep_their_public_names(module):
    mod = importlib.import_module(module)
    missing = [n for n in BEFORE_SPLIT[module] if not hasattr(mod, n)]
    assert not missing, f"{module} lost {missing}"
