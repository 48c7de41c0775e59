"""Face verification metrics: the LFW protocol, ROC, AUC, EER and TAR@FAR.

The protocol follows LFW (Huang et al., "Labeled Faces in the Wild: A Database
for Studying Face Recognition in Unconstrained Environments", UMass TR 07-49,
2007) as InsightFace's verification code runs it on every ``.bin`` pair set
(lfw, cfp_fp, agedb_30, ...):

1. embedding of an image = backbone(image) + backbone(horizontal flip), then
   L2-normalised;
2. distance of a pair = squared L2 distance of the two embeddings, in [0, 4];
3. a pair is predicted "same" when ``distance < threshold``; thresholds are
   ``np.arange(0, 4, 0.01)``;
4. 10 contiguous folds (scikit-learn ``KFold`` without shuffling); on each fold
   the threshold with the best accuracy on the other 9 folds (the first one on
   ties, as ``np.argmax``) is applied to the held-out fold;
5. report the mean and the (population) standard deviation of the 10 fold
   accuracies.

Everything here is NumPy and vectorised: the accuracy of every threshold on
every fold comes from one sort-and-count pass, never from a Python loop over
thresholds and pairs.
"""
# Three parts: protocol.py (pair checks, distances, k-fold accuracy), roc.py
# (ROC, AUC, EER, TAR@FAR), report.py (all of them for one pair set).
from .protocol import (DEFAULT_THRESHOLDS, VerificationAccuracy, _as_issame,  # noqa: F401
                       pair_distances, verification_accuracy)
from .report import VerificationReport, evaluate_verification
from .roc import DEFAULT_FARS, RocCurve, TarAtFar, auc, eer, roc_curve, tar_at_far

__all__ = ["DEFAULT_THRESHOLDS", "DEFAULT_FARS", "pair_distances",
           "verification_accuracy", "VerificationAccuracy", "roc_curve",
           "RocCurve", "auc", "eer", "tar_at_far", "TarAtFar",
           "evaluate_verification", "VerificationReport"]
