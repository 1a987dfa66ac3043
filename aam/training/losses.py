"""Loss functions of pretraining and fine-tuning, and the `MultiTaskLoss` that combines them.

Model outputs and batches are dicts (see `aam.training.trainer`). Outputs may arrive in bf16 or fp16 under
autocast; every loss here casts its inputs to float32 first, because squared errors and log-softmax lose too much
precision in 16-bit floats. float64 inputs are kept as they are, so the functions can be checked with
`torch.autograd.gradcheck`.

Shapes used below: B samples per batch, S ASV slots per sample, L nucleotide positions per ASV, V nucleotide
vocabulary, R encoded ASV rows (at most B*S; fewer when identical ASVs are encoded once), C classes, D embedding
width.
"""
import numpy as np
import torch
import torch.nn.functional as F

from aam.training.distributed import gather_rows

IGNORE = -100

# sum of weights below this counts as "nothing to average over"
_EPS = 1e-12


def _as_float(x):
    """`x` as float32, except float64 which is kept (full precision for gradient checks)."""
    if x.dtype == torch.float64:
        return x
    return x.float()


def _zero_like_loss(t):
    """A zero scalar that is still connected to `t`, so ``backward()`` works on a batch without targets."""
    return _as_float(t).sum() * 0.0


def find_nonfinite(outputs):
    """Names of the floating-point tensors in `outputs` that hold NaN or Inf.

    Parameters
    ----------
    outputs : dict of str -> object
        Model outputs; non-tensors and integer/bool tensors are skipped.

    Returns
    -------
    list of str
        Keys in the order of `outputs`; empty when everything is finite.
    """
    bad = []
    for key, value in outputs.items():
        if not torch.is_tensor(value) or not value.is_floating_point():
            continue
        # detach: this check must never become part of the autograd graph
        if not bool(torch.isfinite(value.detach()).all()):
            bad.append(key)
    return bad


def pairwise_distances(emb):
    """Euclidean distances between all rows of `emb`, with finite gradients at zero distance.

    Parameters
    ----------
    emb : torch.Tensor
        [B, D] embeddings (any float dtype; computed in float32, or float64 when given float64).

    Returns
    -------
    torch.Tensor
        [B, B] distances; the diagonal is exactly 0.
    """
    emb = _as_float(emb)
    # differences rather than the |a|^2 + |b|^2 - 2ab expansion: exact zeros on the diagonal and no negative
    # squared distances from cancellation; B is a batch size, so [B, B, D] is small
    diff = emb.unsqueeze(1) - emb.unsqueeze(0)  # [B, B, D]
    sq = (diff * diff).sum(-1)  # [B, B]
    positive = sq > 0
    # d sqrt(x)/dx is infinite at 0: take the root only where sq > 0 and feed a harmless 1 elsewhere, so the
    # gradient of the unused branch is finite (0 after `where`) instead of inf * 0 = NaN
    safe_sq = torch.where(positive, sq, torch.ones_like(sq))  # [B, B]
    return torch.where(positive, torch.sqrt(safe_sq), torch.zeros_like(sq))  # [B, B]


def pairwise_distance_loss(emb, distances):
    """Mean squared error between embedding distances and target distances over distinct pairs.

    Parameters
    ----------
    emb : torch.Tensor
        [B, D] distance embeddings.
    distances : torch.Tensor
        [B, B] target distances (for example UniFrac) between the batch's samples.

    Returns
    -------
    torch.Tensor
        Scalar; the diagonal (a sample with itself) is excluded because it is 0 on both sides and would only
        dilute the mean. With fewer than 2 samples there is no pair and the loss is 0 (still differentiable).
    """
    B = emb.shape[0]
    if B < 2:
        return _zero_like_loss(emb)
    pred = pairwise_distances(emb)  # [B, B]
    target = distances.to(device=pred.device, dtype=pred.dtype)  # [B, B]
    off_diagonal = ~torch.eye(B, dtype=torch.bool, device=pred.device)  # [B, B]
    err = (pred - target)[off_diagonal]  # [B*(B-1)]
    return (err * err).mean()


def _local_pairwise_loss(emb, distances, sample_ids=None):
    """`pairwise_distance_loss` with the signature of `MultiTaskLoss`'s ``pairwise`` (sample IDs unused)."""
    return pairwise_distance_loss(emb, distances)


def _nucleotide_rows(nuc_logits, nuc_targets, row_slot, row_weight):
    """Targets and per-position weights aligned with the encoded rows.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        [R, L] long targets and [R, L] float weights (the row's weight where the target is not ignored, else 0).
    """
    R, L, _ = nuc_logits.shape
    flat_targets = nuc_targets.reshape(-1, nuc_targets.shape[-1])  # [B*S, L]
    if flat_targets.shape[-1] != L:
        raise ValueError(f"nuc_logits have {L} positions but nuc_targets have {flat_targets.shape[-1]}")
    row_slot = row_slot.to(device=flat_targets.device, dtype=torch.long)
    targets = flat_targets[row_slot].to(nuc_logits.device)  # [R, L]
    weight = row_weight.to(device=nuc_logits.device, dtype=_as_float(nuc_logits).dtype)  # [R]
    position_weight = weight.unsqueeze(1) * (targets != IGNORE)  # [R, L]
    return targets, position_weight


def nucleotide_loss(nuc_logits, nuc_targets, row_slot, row_weight):
    """Cross-entropy of the masked nucleotides, averaged over all masked positions of all slots.

    A row that stands for several slots (the same ASV in several samples, encoded once) counts `row_weight`
    times, so the result equals the plain mean over every slot's masked positions.

    Parameters
    ----------
    nuc_logits : torch.Tensor
        [R, L, V] logits of the encoded rows.
    nuc_targets : torch.Tensor
        [B, S, L] long, the true nucleotide at masked positions and `IGNORE` elsewhere.
    row_slot : torch.Tensor
        [R] long, the flat slot index ``b * S + s`` that each row was taken from.
    row_weight : torch.Tensor
        [R] float, how many slots share each row.

    Returns
    -------
    torch.Tensor
        Scalar; 0 (still differentiable) when no position is masked.
    """
    R, L, V = nuc_logits.shape
    logits = _as_float(nuc_logits)
    targets, position_weight = _nucleotide_rows(nuc_logits, nuc_targets, row_slot, row_weight)  # [R, L] x2
    ce = F.cross_entropy(logits.reshape(R * L, V), targets.reshape(R * L), ignore_index=IGNORE,
                         reduction="none").reshape(R, L)  # [R, L], 0 at ignored positions
    # clamp instead of a branch: with no masked position the numerator is exactly 0 as well, and no
    # host-device synchronization is needed
    return (ce * position_weight).sum() / position_weight.sum().clamp_min(_EPS)


@torch.no_grad()
def nucleotide_accuracy(nuc_logits, nuc_targets, row_slot, row_weight):
    """Fraction of masked nucleotides predicted correctly, weighted like `nucleotide_loss`.

    Parameters
    ----------
    nuc_logits, nuc_targets, row_slot, row_weight
        As in `nucleotide_loss`.

    Returns
    -------
    torch.Tensor
        Float scalar in [0, 1]; 0 when no position is masked.
    """
    targets, position_weight = _nucleotide_rows(nuc_logits, nuc_targets, row_slot, row_weight)  # [R, L] x2
    correct = (nuc_logits.argmax(-1) == targets).to(position_weight.dtype)  # [R, L]
    return (correct * position_weight).sum() / position_weight.sum().clamp_min(_EPS)


def masked_mse(pred, target, mask):
    """Mean squared error over the positions where `mask` is True.

    Parameters
    ----------
    pred, target : torch.Tensor
        [B, S] (any matching shape).
    mask : torch.Tensor
        [B, S] bool.

    Returns
    -------
    torch.Tensor
        Scalar; 0 (still differentiable) when the mask is empty.
    """
    pred = _as_float(pred)
    mask = mask.to(device=pred.device, dtype=torch.bool)
    # index instead of multiplying by the mask: values in empty slots never enter the loss or its gradient
    err = pred[mask] - target.to(device=pred.device, dtype=pred.dtype)[mask]  # [n_occupied]
    if err.numel() == 0:
        return _zero_like_loss(pred)
    return (err * err).mean()


def relative_abundance(counts):
    """Counts divided by each sample's total.

    Parameters
    ----------
    counts : torch.Tensor
        [B, S, 1] (or [B, S]) raw counts, 0 in empty slots.

    Returns
    -------
    torch.Tensor
        [B, S] float32; all zeros for a sample without counts.
    """
    if counts.dim() == 3:
        counts = counts.squeeze(-1)  # [B, S]
    counts = _as_float(counts)
    total = counts.sum(dim=1, keepdim=True)  # [B, 1]
    # divide by 1 where the total is 0 so that no NaN is ever formed
    return torch.where(total > 0, counts / torch.where(total > 0, total, torch.ones_like(total)),
                       torch.zeros_like(counts))  # [B, S]


def class_weights_from_labels(labels, n_classes):
    """'Balanced' class weights ``n / (n_classes * count)``, as in scikit-learn.

    Parameters
    ----------
    labels : numpy.ndarray
        Integer class indices of the training samples; values outside ``[0, n_classes)`` (such as `IGNORE`)
        are not counted.
    n_classes : int

    Returns
    -------
    torch.Tensor
        [C] float32. A class absent from `labels` gets weight 1.0: no training sample carries it, so its weight
        never enters the training loss, and 1.0 avoids the division by zero while keeping validation losses
        finite and comparable.
    """
    labels = np.asarray(labels).astype(np.int64).ravel()
    labels = labels[(labels >= 0) & (labels < n_classes)]
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)  # [C]
    weights = np.ones(n_classes, dtype=np.float64)
    present = counts > 0
    weights[present] = len(labels) / (n_classes * counts[present])
    return torch.tensor(weights, dtype=torch.float32)


def _cross_entropy_mean(logits, targets, weight=None):
    """Cross-entropy averaged over the non-ignored targets; 0 (differentiable) when all are ignored.

    ``F.cross_entropy(reduction='mean')`` returns NaN when every target is ignored, which happens for a batch
    whose ASVs all lack a taxonomy label, so the mean is taken here with a guarded denominator.
    """
    targets = targets.to(device=logits.device, dtype=torch.long)
    ce = F.cross_entropy(logits, targets, weight=weight, ignore_index=IGNORE, reduction="none")  # [N]
    valid = targets != IGNORE  # [N]
    if weight is not None:
        # the same normalization as reduction='mean': divide by the summed weights of the targets
        denom = weight[targets.clamp_min(0)] * valid  # [N]
    else:
        denom = valid.to(ce.dtype)  # [N]
    return ce.sum() / denom.sum().clamp_min(_EPS)


class MultiTaskLoss(torch.nn.Module):
    """The weighted sum of every loss whose output and target are both present.

    Components (each used only when the model produced the output, the batch carries the target and the
    component's weight is positive):

    ============== ============================================ ========================= ===============
    key            output / batch key                           loss                      weight
    ============== ============================================ ========================= ===============
    target_loss    target_prediction / targets                  MSE or cross-entropy      target_penalty
    count_loss     count_prediction / counts                    masked MSE (rel. abund.)  count_penalty
    unifrac_loss   distance_embedding / distances               pairwise distance MSE     penalty
    faith_pd_loss  faith_pd / faith_pd                          MSE                       penalty
    taxonomy_loss  taxonomy_logits / taxonomy                   cross-entropy             penalty
    nuc_loss       nuc_logits / nuc_targets                     masked-nucleotide CE      nuc_penalty
    ============== ============================================ ========================= ===============

    Parameters
    ----------
    target_penalty, penalty, nuc_penalty, count_penalty : float
        Weights of the components (see the table).
    classifier : bool
        Cross-entropy on [B, C] logits instead of MSE on [B] values for the target.
    class_weights : torch.Tensor, optional
        [C] weights of the classification cross-entropy (see `class_weights_from_labels`).
    pairwise : callable, optional
        ``pairwise(emb [B, D], distances [B, B], sample_ids) -> scalar``, the distance loss; default
        `pairwise_distance_loss` over the batch. Multi-process training builds its loss with a
        `GatheredPairwiseLoss` here (see `with_pairwise`).
    """

    COMPONENTS = (
        # (loss key, output key, batch key, weight attribute)
        ("target_loss", "target_prediction", "targets", "target_penalty"),
        ("count_loss", "count_prediction", "counts", "count_penalty"),
        ("unifrac_loss", "distance_embedding", "distances", "penalty"),
        ("faith_pd_loss", "faith_pd", "faith_pd", "penalty"),
        ("taxonomy_loss", "taxonomy_logits", "taxonomy", "penalty"),
        ("nuc_loss", "nuc_logits", "nuc_targets", "nuc_penalty"),
    )

    def __init__(self, target_penalty=1.0, penalty=1.0, nuc_penalty=1.0, count_penalty=1.0, classifier=False,
                 class_weights=None, pairwise=None):
        super().__init__()
        self.pairwise = pairwise or _local_pairwise_loss
        self.target_penalty = float(target_penalty)
        self.penalty = float(penalty)
        self.nuc_penalty = float(nuc_penalty)
        self.count_penalty = float(count_penalty)
        self.classifier = bool(classifier)
        if class_weights is not None:
            class_weights = torch.as_tensor(class_weights, dtype=torch.float32)
        # a buffer so that .to(device) and state_dict carry it; not persistent because the weights are
        # recomputed from the training labels and are no part of the model
        self.register_buffer("class_weights", class_weights, persistent=False)

    def with_pairwise(self, pairwise):
        """A new loss with the same weights whose distance component is `pairwise`."""
        return MultiTaskLoss(self.target_penalty, self.penalty, self.nuc_penalty, self.count_penalty,
                             self.classifier, self.class_weights, pairwise=pairwise)

    # ---- components --------------------------------------------------------------------------------------
    def _target_loss(self, outputs, batch):
        pred = outputs["target_prediction"].float()
        targets = batch["targets"].to(pred.device)
        if self.classifier:
            weight = None if self.class_weights is None else self.class_weights.to(pred.device)
            return _cross_entropy_mean(pred, targets, weight)  # pred [B, C], targets [B]
        # a [B, 1] head and [B] targets must not broadcast to [B, B]
        return F.mse_loss(pred.reshape(targets.shape), targets.float())

    def _count_loss(self, outputs, batch):
        pred = outputs["count_prediction"].float()  # [B, S]
        target = relative_abundance(batch["counts"]).to(pred.device)  # [B, S]
        mask = outputs.get("asv_mask")
        if mask is None:
            mask = target > 0  # [B, S] occupied slots have positive counts
        return masked_mse(pred, target, mask)

    def _unifrac_loss(self, outputs, batch):
        emb = outputs["distance_embedding"].float()
        return self.pairwise(emb, batch["distances"].float(), batch.get("sample_ids"))

    def _faith_pd_loss(self, outputs, batch):
        pred = outputs["faith_pd"].float()
        target = batch["faith_pd"].to(pred.device).float()
        return F.mse_loss(pred.reshape(target.shape), target)

    def _taxonomy_loss(self, outputs, batch):
        logits = outputs["taxonomy_logits"].float()  # [B, S, C]
        C = logits.shape[-1]
        return _cross_entropy_mean(logits.reshape(-1, C), batch["taxonomy"].reshape(-1))  # [B*S, C], [B*S]

    def _nuc_loss(self, outputs, batch):
        logits = outputs["nuc_logits"]  # [R, L, V]
        targets = batch["nuc_targets"]  # [B, S, L]
        row_slot, row_weight = outputs.get("nuc_row_slot"), outputs.get("nuc_row_weight")
        if row_slot is None:
            # a model that encodes every slot: row r is slot r, once
            row_slot = torch.arange(logits.shape[0], device=logits.device)
        if row_weight is None:
            row_weight = torch.ones(logits.shape[0], device=logits.device)
        return nucleotide_loss(logits, targets, row_slot, row_weight)

    # ---- forward --------------------------------------------------------------------------------------------
    def forward(self, outputs, batch):
        """Every applicable component and their weighted sum.

        Parameters
        ----------
        outputs : dict of str -> torch.Tensor
        batch : dict of str -> object

        Returns
        -------
        dict of str -> torch.Tensor
            float32 scalars: one per applicable component, and ``total_loss``.

        Raises
        ------
        ValueError
            When no component applies (names what each component would need).
        """
        losses, missing = {}, []
        for key, out_key, batch_key, weight_attr in self.COMPONENTS:
            weight = getattr(self, weight_attr)
            absent = []
            if out_key not in outputs:
                absent.append(f"outputs[{out_key!r}]")
            if batch_key not in batch:
                absent.append(f"batch[{batch_key!r}]")
            if weight <= 0 or absent:
                reason = f"{weight_attr}={weight:g}" if weight <= 0 else "missing " + " and ".join(absent)
                missing.append(f"{key} ({reason})")
                continue
            losses[key] = getattr(self, f"_{key}")(outputs, batch).float()
        if not losses:
            raise ValueError("MultiTaskLoss: no loss component applies to these outputs and batch: "
                             + "; ".join(missing))
        total = sum(getattr(self, weight_attr) * losses[key]
                    for key, _, _, weight_attr in self.COMPONENTS if key in losses)
        losses["total_loss"] = total
        return losses


class GatheredPairwiseLoss:
    """The pairwise distance loss over the global batch of all processes (DDP / FSDP training).

    Each rank embeds only its local samples. Comparing those with each other alone would drop every pair whose
    samples sit on different ranks, and with many ranks most pairs are such pairs (see docs/multi-gpu.md: the
    embeddings collapse toward the mean distance). This loss gathers the distance embeddings of every rank
    (differentiably) and compares all pairs of the global batch with the matching block of the full distance
    matrix. Every rank computes the same value; the backward of the gather sums each rank's gradient onto the
    rank owning the sample, and DDP / FSDP then average over ranks, so the parameter gradient equals the
    single-process gradient of the same global batch. Training steps use it; validation, where every rank
    scores the same batches, uses the plain loss.

    Parameters
    ----------
    distances : np.ndarray or torch.Tensor
        [N, N] distance matrix of the training split.
    sample_ids : list of str
        The N sample IDs in the matrix's row order.
    ctx : aam.training.context.RunContext
        The multi-process run.
    """

    def __init__(self, distances, sample_ids, ctx):
        self.distances = torch.as_tensor(np.asarray(distances, dtype=np.float32))  # [N, N]
        self.row = {str(s): i for i, s in enumerate(sample_ids)}
        self.ctx = ctx

    def __call__(self, emb, distances, sample_ids=None):
        """Loss of [B_local, D] embeddings; `distances` ([B_local, B_local]) is used in a single process."""
        if not self.ctx.active or sample_ids is None:
            return pairwise_distance_loss(emb, distances)
        rows = torch.tensor([self.row[str(s)] for s in sample_ids], dtype=torch.long, device=emb.device)
        global_emb, _ = gather_rows(emb, self.ctx)  # [B_global, D], rank order
        global_rows, _ = gather_rows(rows, self.ctx)  # [B_global], the same order
        idx = global_rows.cpu()
        block = self.distances[idx][:, idx]  # [B_global, B_global]
        return pairwise_distance_loss(global_emb, block)
