"""The benchmark tool runs end to end (tiny settings) and writes its table and plot."""
from helpers import load_tool, run_tool


def test_benchmark_quick_run_writes_report(tmp_path):
    out = tmp_path / 'benchmark.md'
    run_tool('analysis/benchmark.py', '--models', 'DualToken-ViT-T', 'ResNet-18',
             '--repeats', '1', '--warmup', '0', '--batch', '2', '--threads', '1',
             '--skip-extras', '--out', str(out), cwd=str(tmp_path), timeout=900)
    text = out.read_text()
    for row in ('| DualToken-ViT-T |', '| ResNet-18 |', '| DualToken-ViT-T (budget) |'):
        assert row in text
    assert 'fp32 GEMM peak' in text and 'blas' in text and 'onednn' in text
    assert '## Targets (issue 7)' in text
    assert '- T at 800x1333 over pixel scaling' in text  # with and without the token budget
    assert (tmp_path / 'benchmark.png').stat().st_size > 10000


def test_kernel_choices_time_ours_against_each_alternative_and_are_reported():
    benchmark = load_tool('analysis/benchmark.py')
    rows = benchmark.kernel_choices(batch=2, repeats=1)
    operations = {op for op, _, _ in rows}
    assert len(operations) == 4
    for op in operations:
        candidates = [c for o, c, _ in rows if o == op]
        assert len(candidates) == 2 and sum('(ours)' in c for c in candidates) == 1
    assert all(ms > 0 for _, _, ms in rows)
    args = benchmark.argparse.Namespace(threads=1, repeats=1, warmup=0, batch=2)
    gemm = dict(blas=1., onednn=2., peak=2.)
    report = benchmark.render({}, dict(kernels=rows), gemm, args)
    assert '## Kernel and layout choices' in report
    assert all(f'| {op} | {c} |' in report for op, c, _ in rows)
