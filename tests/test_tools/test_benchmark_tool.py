"""The benchmark tool runs end to end (tiny settings) and writes its table and plot."""
from helpers import load_tool, run_tool


def test_benchmark_quick_run_writes_report(tmp_path):
    """Every section in a tiny mode: 1 round, batch 2, RetinaNet at 96x128, the quick op
    profile (no timings checked)."""
    out = tmp_path / 'benchmark.md'
    run_tool('analysis/benchmark.py', '--models', 'DualToken-ViT-T', 'ResNet-18',
             '--repeats', '1', '--warmup', '0', '--batch', '2', '--threads', '1',
             '--skip-extras', '--ort-repeats', '1', '--det-size', '96', '128',
             '--det-repeats', '1', '--heap-rounds', '1', '--heap-iterations', '1',
             '--out', str(out), cwd=str(tmp_path), timeout=900)
    text = out.read_text()
    for row in ('| DualToken-ViT-T |', '| ResNet-18 |', '| DualToken-ViT-T (budget) |'):
        assert row in text
    assert 'fp32 GEMM peak' in text and 'blas' in text and 'onednn' in text
    assert '## Targets (issue 7)' in text
    assert '- T at 800x1333 over pixel scaling' in text  # with and without the token budget
    assert (tmp_path / 'benchmark.png').stat().st_size > 10000
    # issue 16: batch-1 latency in eager and ONNX Runtime, with the exported graph's counts
    latency = text.split('## Batch-1 latency at 224: eager and ONNX Runtime')[1]
    for name in ('DualToken-ViT-T', 'ResNet-18'):
        cells = next(line for line in latency.splitlines() if line.startswith(f'| {name} |'))
        assert cells.count('|') == 11 and 'n/a' not in cells and 'failed' not in cells, cells
    # the RetinaNet iteration with the three backbones, and every target with its figures
    assert '## RetinaNet training iteration, 128x96, batch 2' in text
    assert ('| backbone | s / iteration (spread) | backbone s | neck s | head + losses s | '
            'backward s | optimizer s |') in text
    for backbone in ('DualToken-ViT-S', 'ResNet-18', 'EdgeNeXt-small'):
        row = next(line for line in text.split('## RetinaNet training iteration')[1].splitlines()
                   if line.startswith(f'| {backbone} | '))
        assert row.count('|') == 8 and 'n/a' not in row, row
    # CPU memory: the training figures keep freed memory, and the A/B against glibc's defaults
    assert 'Training figures (train img/s, the RetinaNet iteration) with freed CPU memory kept' \
        in text
    heap = next(line for line in text.splitlines() if line.startswith('CPU memory ('))
    assert 'the RetinaNet-S iteration at 128x96, batch 2' in heap and 'FAILED' not in heap
    assert heap.count('page faults per iteration') == 2 and 'x the peak memory.' in heap
    assert 'Batch-1 latency at 224 = fixed cost + a part that grows' not in text  # no S here
    targets = text.split('## Targets (issue 16)')[1].split('\n\n', 2)[1].splitlines()
    assert len(targets) == 6 and all('target: ' in line for line in targets)
    assert targets[4].startswith('- RetinaNet training iteration: S ')
    # both floors of both models, batch 1 and the training step; of the RetinaNet target's
    # two sides, the RetinaNet iteration
    floor = text.split('## What the kernels allow: two floors')[1].split('\n## ')[0]
    assert 'the RetinaNet iteration above at 128x96, batch 2) recorded' in floor
    assert 'In ONNX Runtime (batch 1, exported as in the latency table above)' in floor
    rows = [('DualToken-ViT-T', 'batch 1'), ('DualToken-ViT-T', 'training step'),
            ('ResNet-18', 'batch 1'), ('ResNet-18', 'training step'),
            ('DualToken-ViT-S', 'RetinaNet iteration'), ('ResNet-18', 'RetinaNet iteration'),
            ('DualToken-ViT-T', 'ONNX Runtime batch 1'), ('ResNet-18', 'ONNX Runtime batch 1')]
    for name, scenario in rows:
        row = next(line for line in floor.splitlines()
                   if line.startswith(f'| {name} | {scenario} | '))
        assert row.count('|') == 9 and 'n/a' not in row, row
    assert not any(line.startswith('| EdgeNeXt-small | ') for line in floor.splitlines())
    assert '- RetinaNet iteration: DualToken-ViT-S with its present kernels ' in floor
    # the op profile after the timings, in its quick form, of the --models it covers
    profile = text.split('## Where the time goes (profile)')[1]
    assert '- Batch 1, eager: ResNet-18 ' in profile and 'batch 2.' in profile
    assert profile.count('| ResNet-18 | ') == 3 and 'DualToken-ViT-T' not in profile


def test_speed_targets_report_each_figure_beside_its_target():
    benchmark = load_tool('analysis/benchmark.py')
    rows = {'DualToken-ViT-S': dict(eager_ms=20., train_ips=30., ips32=60.),
            'ResNet-18': dict(eager_ms=25., train_ips=20., ips32=40.),
            'EdgeNeXt-small': dict(train_ips=25.)}
    ort = {'DualToken-ViT-S': dict(ms=20.), 'ResNet-18': dict(ms=18.)}
    det = {'DualToken-ViT-S': dict(s=2.), 'ResNet-18': dict(s=2.5)}
    lines = benchmark.speed_target_lines(rows, ort, det)
    assert len(lines) == 6
    assert 'S 20.0 ms, ResNet-18 25.0 ms: S at 1.25x' in lines[0] and lines[0].endswith('met)')
    assert 'S at 0.90x' in lines[1] and 'NOT met' in lines[1]  # ONNX Runtime: slower
    assert 'S at 1.50x' in lines[2] and 'target: S >= 1.20x ResNet-18; met' in lines[2]
    assert 'S at 1.20x' in lines[3] and 'NOT met' in lines[3]  # 1.3x EdgeNeXt needed
    assert 'S 2.000 s, ResNet-18 2.500 s' in lines[4] and lines[4].endswith('met)')
    assert 'S at 1.50x' in lines[5]
    assert 'n/a' in benchmark.speed_target_lines({}, {}, {})[0]


def test_fixed_cost_split_says_what_s_would_need():
    benchmark = load_tool('analysis/benchmark.py')
    rows = {'DualToken-ViT-S': dict(eager_ms=40., fixed_ms=20.),
            'ResNet-18': dict(eager_ms=30., fixed_ms=6.)}
    (blank, line), = [benchmark.fixed_cost_lines(rows)]
    assert blank == ''
    assert 'DualToken-ViT-S 20.0 + 20.0 ms, ResNet-18 6.0 + 24.0 ms' in line
    assert 'a fixed cost of 10.0 ms per call (0.50x of its measured one)' in line
    assert benchmark.fixed_cost_lines({'ResNet-18': rows['ResNet-18']}) == []


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


def test_compiled_training_line_reports_speed_up_or_failure():
    """The extras' compiled training step (timed only in full runs: compilation takes
    minutes) is rendered with both figures, or says why it is missing."""
    benchmark = load_tool('analysis/benchmark.py')
    line = benchmark.compiled_training_line(
        dict(eager_ips=10., eager_spread=.05, compiled_ips=13., compiled_spread=.1,
             compile_seconds=95.), 32)
    assert '13.0 img/s (10%) vs eager 10.0 (5%), 1.30x' in line and '95 s' in line
    assert 'FAILED (boom)' in benchmark.compiled_training_line(dict(error='boom'), 32)
    assert 'not measured' in benchmark.compiled_training_line(None, 32)


def test_onnx_export_is_of_the_eval_graph_whatever_mode_the_model_is_in(tmp_path):
    """The ONNX Runtime latency is of a deployed graph: the training-step section leaves the
    models in train mode, and the exporter keeps a module's mode."""
    import numpy as np
    import torch
    tool = load_tool('analysis/benchmark.py')
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8),
                                torch.nn.Dropout(0.5), torch.nn.AdaptiveAvgPool2d(1))
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
    model.train()
    path = str(tmp_path / 'm.onnx')
    tool.export_onnx(model, path, size=(32, 32))
    x = torch.rand(1, 3, 32, 32)
    (out, ) = tool.ort_session(path, 1).run(None, {'image': x.numpy()})
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_compiled_batch_one_line_reports_both_models_or_why_not():
    """The extras' compiled batch-1 latency (timed only in full runs: compilation takes a
    minute) is rendered with both figures and their ratio, or says what failed."""
    benchmark = load_tool('analysis/benchmark.py')
    result = {'DualToken-ViT-S': dict(eager_ms=36., compiled_ms=30., compile_s=70.),
              'ResNet-18': dict(eager_ms=24., compiled_ms=18., compile_s=5.)}
    line = benchmark.compiled_batch_one_line(result)
    assert 'DualToken-ViT-S 30.0 ms (eager 36.0), ResNet-18 18.0 ms (eager 24.0)' in line
    assert 'at 0.60x ResNet-18\'s speed when both are compiled' in line
    assert '70 s and 5 s' in line
    result['ResNet-18'] = dict(error='BackendCompilerFailed: no compiler')
    assert 'ResNet-18 FAILED (BackendCompilerFailed: no compiler)' in \
        benchmark.compiled_batch_one_line(result)
    assert benchmark.compiled_batch_one_line({}).endswith('not measured')


def test_unmet_targets_carry_both_floors():
    """An unmet target says the best ratios S's present kernels and its compute ops alone
    allow, and what that says (figures of compute_floor.floors)."""
    benchmark = load_tool('analysis/benchmark.py')
    rows = {'DualToken-ViT-S': dict(eager_ms=40., train_ips=10., ips32=60.),
            'ResNet-18': dict(eager_ms=25., train_ips=20., ips32=40.),
            'EdgeNeXt-small': dict(train_ips=9.)}

    def r(full, every_op, loop, floor):
        return dict(full_ms=full, every_op_ms=every_op, loop_ms=loop, floor_ms=floor,
                    kernels_ms=every_op - loop)
    floor = {'batch 1': {'DualToken-ViT-S': r(40., 34., 2., 30.),
                         'ResNet-18': r(25., 25., .1, 20.)},
             'training step': {'DualToken-ViT-S': r(3200., 2410., 10., 1000.),
                               'ResNet-18': r(1600., 1600., 1., 1300.),
                               'EdgeNeXt-small': r(3600., 3600., 5., 3000.)},
             'RetinaNet iteration': {'DualToken-ViT-S': r(13000., 12900., 100., 9000.),
                                     'ResNet-18': r(12000., 12000., 10., 10000.)}}
    floor['ONNX Runtime batch 1'] = {  # the whole call runs the present kernels
        'DualToken-ViT-S': dict(full_ms=24., kernels_ms=24., floor_ms=20.),
        'ResNet-18': dict(full_ms=18., kernels_ms=18., floor_ms=18.)}
    ort = {'DualToken-ViT-S': dict(ms=25.), 'ResNet-18': dict(ms=19.)}
    det = {'DualToken-ViT-S': dict(s=13.), 'ResNet-18': dict(s=12.)}
    lines = benchmark.speed_target_lines(rows, ort, det, floor)
    # batch 1: 25 / (34 - 2) = 0.78x and 25 / 30 = 0.83x, both below 1.0
    assert lines[0].endswith('NOT met); at most 0.78x with its present kernels, 0.83x with '
                             'its compute ops alone: out of reach without other kernels or '
                             'other maths'), lines[0]
    # ONNX Runtime: 18 / 24 = 0.75x present, 18 / 20 = 0.90x compute nodes alone
    assert lines[1].startswith('- batch-1 latency at 224, ONNX Runtime: S 25.0 ms, ResNet-18 '
                               '19.0 ms: S at 0.76x')
    assert lines[1].endswith('NOT met); at most 0.75x with its present kernels, 0.90x with '
                             'its compute ops alone: out of reach without other kernels or '
                             'other maths'), lines[1]
    # training vs ResNet-18: 1600 / 2400 = 0.67x present, 1600 / 1000 = 1.60x compute alone
    assert lines[2].endswith('at most 0.67x with its present kernels, 1.60x with its compute '
                             'ops alone: out of reach with its present kernels; only fewer or '
                             'faster kernels (fused norms, activations and residuals) could '
                             'reach it'), lines[2]
    # against EdgeNeXt 10 / 9 = 1.11x < 1.3 (NOT met), but 3600 / 2400 = 1.50x present
    assert lines[3].endswith('at most 1.50x with its present kernels, 3.60x with its compute '
                             'ops alone: not excluded by its present kernels'), lines[3]
    # RetinaNet: 12000 / (12900 - 100) = 0.94x present, 12000 / 9000 = 1.33x compute alone
    assert lines[4].startswith('- RetinaNet training iteration: S 13.000 s, ResNet-18 12.000 s')
    assert lines[4].endswith('NOT met); at most 0.94x with its present kernels, 1.33x with its '
                             'compute ops alone: out of reach with its present kernels; only '
                             'fewer or faster kernels (fused norms, activations and residuals) '
                             'could reach it'), lines[4]
    assert 'present kernels' not in lines[5]  # met targets carry no bound


