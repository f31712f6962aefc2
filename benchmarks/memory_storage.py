"""Memory and storage of N experts: N LoRA adapters on one backbone (PPAP here) against N full
copies (what the original PPAP code loads), and the bytes each expert needs on disk.

    python benchmarks/memory_storage.py [--experts 1 5 10] [--ranks 1 2 4 8 16]

Resident bytes = parameters + buffers of the routed guide, each tensor counted once. Stored bytes
= file sizes written by ``ppap.experts.adapters.save_adapter`` and ``ppap.models.classifiers.save_guide``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

import _common as common


def resident_bytes(module: torch.nn.Module) -> tuple[int, int]:
    """(bytes, elements) of the parameters and buffers, each storage counted once."""
    seen, total, elements = set(), 0, 0
    for tensor in [*module.parameters(), *module.buffers()]:
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tensor.numel())
        if key in seen:
            continue
        seen.add(key)
        total += tensor.numel() * tensor.element_size()
        elements += tensor.numel()
    return total, elements


def main() -> None:
    p = common.parser(__doc__.split("\n")[0], repeats=1)
    p.add_argument("--experts", type=int, nargs="+", default=[1, 5, 10])
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--main-rank", type=int, default=4, help="the rank the memory goal is judged at (the preset's)")
    p.add_argument("--exclude", default=r"^backbone\.layer4\.",
                   help="regex of layers left without LoRA for one extra row (as experts.lora.exclude)")
    args = p.parse_args()
    common.set_threads(args.threads)
    machine = common.machine(args.threads)

    from ppap.experts import AdapterExperts, ModuleExperts, adapters, timestep_ranges
    from ppap.models.classifiers import guide_spec, save_guide

    guide_bytes, guide_elements = resident_bytes(common.preset_guide())
    memory_rows = []
    for n in args.experts:
        ranges = timestep_ranges(1000, n)
        names = [f"expert{i}" for i in range(n)]
        full = ModuleExperts(common.full_copies(common.preset_guide(), n), ranges)
        nbytes, elements = resident_bytes(full)
        memory_rows.append(dict(scheme="full copies", n_experts=n, rank=None, params_and_buffers=elements,
                                bytes=nbytes, ratio_to_one_guide=nbytes / guide_bytes))
        for rank in args.ranks:
            guide = common.preset_guide()
            model = adapters.attach_lora_experts(guide, names, rank, common.LORA_ALPHA, common.lora_targets(guide))
            nbytes, elements = resident_bytes(AdapterExperts(model, names, ranges))
            memory_rows.append(dict(scheme="lora adapters", n_experts=n, rank=rank, params_and_buffers=elements,
                                    bytes=nbytes, ratio_to_one_guide=nbytes / guide_bytes))
    # Where an adapter's parameters sit (main rank), and one cheaper target set the config allows.
    guide = common.preset_guide()
    model = adapters.attach_lora_experts(guide, ["expert0"], args.main_rank, common.LORA_ALPHA, common.lora_targets(guide))
    per_layer: dict[str, int] = {}
    for name, param in model.named_parameters():
        if "lora_" in name:
            layer = name.split(".lora_")[0].removeprefix("base_model.model.")
            per_layer[layer] = per_layer.get(layer, 0) + param.numel()
    total = sum(per_layer.values())
    layer_rows = [dict(layer=k, adapter_params=v, share=v / total)
                  for k, v in sorted(per_layer.items(), key=lambda kv: -kv[1])]
    exclude = args.exclude
    n_max = max(args.experts)
    names = [f"expert{i}" for i in range(n_max)]
    guide = common.preset_guide()
    lora = common.PRESET["experts"]["lora"]
    targets = adapters.lora_target_modules(guide, lora["layer_types"], lora.get("include"), exclude)
    model = adapters.attach_lora_experts(guide, names, args.main_rank, common.LORA_ALPHA, targets)
    nbytes, elements = resident_bytes(AdapterExperts(model, names, timestep_ranges(1000, n_max)))
    memory_rows.append(dict(scheme=f"lora adapters, no LoRA on `{exclude}`", n_experts=n_max, rank=args.main_rank,
                            params_and_buffers=elements, bytes=nbytes, ratio_to_one_guide=nbytes / guide_bytes))
    common.write_csv(args.out / "memory_resident.csv", memory_rows)

    # On disk: one backbone file (also what a fully fine-tuned expert stores), one adapter per rank.
    spec = guide_spec(**common.GUIDE_ARGS)
    storage_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        guide = common.preset_guide()
        save_guide(Path(tmp) / "guide.pt", guide, spec)
        backbone_file = (Path(tmp) / "guide.pt").stat().st_size
        backbone_params = sum(t.numel() for t in guide.state_dict().values())
        storage_rows.append(dict(expert="full fine-tuned (save_guide)", rank=None, tensor_elements=backbone_params,
                                 file_bytes=backbone_file, fraction_of_backbone_file=1.0))
        for rank in args.ranks:
            guide = common.preset_guide()
            model = adapters.attach_lora_experts(guide, ["expert0"], rank, common.LORA_ALPHA, common.lora_targets(guide))
            path = Path(tmp) / f"adapter_r{rank}.pt"
            adapters.save_adapter(path, model, "expert0", guide_id=f"datafree_lora{rank}_n5", index=0)
            size = path.stat().st_size
            storage_rows.append(dict(expert="LoRA adapter (save_adapter)", rank=rank,
                                     tensor_elements=adapters.adapter_parameter_count(model, "expert0"),
                                     file_bytes=size, fraction_of_backbone_file=size / backbone_file))
    common.write_csv(args.out / "storage.csv", storage_rows)

    # Whole guide sets on disk, N = 5 (Table 1's): backbone + N adapters vs N full experts.
    adapter_file = {r["rank"]: r["file_bytes"] for r in storage_rows if r["rank"] is not None}
    set_rows = [dict(guide_set="5 full experts", file_bytes=5 * backbone_file, ratio_to_one_guide=5.0)]
    for rank in args.ranks:
        total = backbone_file + 5 * adapter_file[rank]
        set_rows.append(dict(guide_set=f"backbone + 5 LoRA rank-{rank} adapters", file_bytes=total,
                             ratio_to_one_guide=total / backbone_file))

    main_n10 = next((r for r in memory_rows if r["scheme"] == "lora adapters" and r["n_experts"] == max(args.experts)
                     and r["rank"] == args.main_rank), None)
    ok_ranks = [r["rank"] for r in memory_rows if r["scheme"] == "lora adapters" and r["n_experts"] == max(args.experts)
                and r["ratio_to_one_guide"] <= 1.15]
    small = [r for r in storage_rows if r["rank"] is not None and r["rank"] <= 8]
    worst = max(small, key=lambda r: r["fraction_of_backbone_file"]) if small else None
    footer = [f"One guide: {guide_elements:,} parameters + buffer elements, {guide_bytes:,} bytes resident (float32)."]
    if main_n10 is not None:
        footer.append(common.goal_line(
            f"N = {main_n10['n_experts']} experts in at most 1.15x the memory of one guide (rank {args.main_rank})",
            main_n10["ratio_to_one_guide"] <= 1.15,
            f"{main_n10['ratio_to_one_guide']:.3f}x; ranks meeting it at N = {main_n10['n_experts']}: "
            f"{ok_ranks or 'none'}; {max(args.experts)} full copies: {max(args.experts):.0f}x"))
    if worst is not None:
        footer.append(common.goal_line(
            "an adapter of rank <= 8 stores at most 10% of the backbone's bytes",
            worst["fraction_of_backbone_file"] <= 0.10,
            f"largest, rank {worst['rank']}: {100 * worst['fraction_of_backbone_file']:.1f}%"))
    cheaper = memory_rows[-1]
    footer.append(f"- rank {args.main_rank} without LoRA on `{exclude}` (`experts.lora.exclude`): N = {n_max} experts in "
                  f"{cheaper['ratio_to_one_guide']:.3f}x the memory of one guide (its effect on guidance is not measured here).")
    footer.append(f"- LoRA on the preset's layers (experts.lora: {len(common.lora_targets(common.preset_guide()))} "
                  f"layers), alpha {common.LORA_ALPHA:g}. Buffers (batch-norm statistics, normalisation constants) are shared by the adapters.")
    mem_cols = ["scheme", "n_experts", "rank", "params_and_buffers", "bytes", "ratio_to_one_guide"]
    common.report(args.out, "memory_storage",
                  [f"Machine: {machine}.", "Counts are exact (no timing involved); one run."],
                  [("Resident memory of N experts", common.markdown_table(memory_rows, mem_cols)),
                   (f"Where a rank-{args.main_rank} adapter's parameters sit", common.markdown_table(
                       layer_rows[:6], ["layer", "adapter_params", "share"])),
                   ("Bytes stored per expert", common.markdown_table(
                       storage_rows, ["expert", "rank", "tensor_elements", "file_bytes", "fraction_of_backbone_file"])),
                   ("A guide set of 5 experts on disk", common.markdown_table(
                       set_rows, ["guide_set", "file_bytes", "ratio_to_one_guide"]))],
                  footer)


if __name__ == "__main__":
    main()
