"""The op profile tool (issue 16): counts and shares per scenario, structure only."""
import json

from helpers import load_tool, run_tool


def test_profile_quick_run_reports_counts_and_shares(tmp_path):
    """--quick on S and ResNet-18: ops counted in every scenario, shares summing to 100%,
    ONNX node counts of the exported and the optimised graph (no timings checked)."""
    run_tool('analysis/profile_ops.py', '--quick', '--models', 'DualToken-ViT-S', 'ResNet-18',
             '--out', str(tmp_path / 'profile.md'), '--json', str(tmp_path / 'profile.json'),
             cwd=str(tmp_path), timeout=900)
    result = json.loads((tmp_path / 'profile.json').read_text())
    assert result['threads'] == 1 and result['train_batch'] == 2
    models = result['models']
    assert list(models) == ['DualToken-ViT-S', 'ResNet-18']
    for name, m in models.items():
        for scenario in ('eager', 'train'):
            p = m[scenario]
            assert p['ops'] > 0 and sum(p['op_counts'].values()) == p['ops'], (name, scenario)
            assert abs(sum(p['shares'].values()) - 100) < 1e-6, (name, scenario)
            assert p['op_counts']['convolution'] > 0
        assert m['train']['ops'] > m['eager']['ops']  # backward and AdamW
        onnx = m['onnx']
        assert sum(onnx['exported'].values()) > 0 and sum(onnx['optimised'].values()) > 0
        assert abs(sum(onnx['shares'].values()) - 100) < 1e-6 and 'Conv' in onnx['shares']
    s = models['DualToken-ViT-S']
    assert s['eager']['op_counts']['linear/GEMM'] > 0 and s['eager']['op_counts'][
        'attention/SDPA'] > 0
    assert s['onnx']['exported']['MatMul'] > 0 and s['onnx']['exported']['Conv'] > 0
    assert s['eager']['ops'] > models['ResNet-18']['eager']['ops']
    text = (tmp_path / 'profile.md').read_text()
    assert '## Where the time goes (profile)' in text and 'at 1 thread and' in text
    for title in ('Batch 1, eager', 'Training step', 'ONNX Runtime, batch 1'):
        assert f'- {title}: DualToken-ViT-S ' in text
        assert f'### {title}' in text
    assert text.count('| DualToken-ViT-S | ') == 3


def test_ops_fall_into_their_classes():
    profile_ops = load_tool('analysis/profile_ops.py')
    cases = {
        'aten::addmm': 'linear/GEMM', 'mkldnn::_linear_pointwise': 'linear/GEMM',
        'aten::mkldnn_linear': 'linear/GEMM', 'aten::mm': 'linear/GEMM',
        'aten::upsample_bilinear2d': 'other',
        'aten::convolution_backward': 'convolution',
        'mkldnn::_convolution_pointwise': 'convolution',
        'aten::_scaled_dot_product_flash_attention_for_cpu_backward': 'attention/SDPA',
        'aten::_softmax': 'attention/SDPA', 'aten::_log_softmax': 'other',
        'aten::native_layer_norm_backward': 'normalisation',
        'aten::gelu_backward': 'GELU/activations', 'aten::sigmoid': 'GELU/activations',
        'aten::add_': 'element-wise', 'aten::_foreach_mul_': 'element-wise',
        'aten::_to_copy': 'copies/layout', 'aten::permute': 'copies/layout',
        'aten::t': 'copies/layout', 'aten::sum': 'other',
        'autograd::engine::evaluate_function: GeluBackward0': 'other',
        'Optimizer.step#AdamW.step': 'other',
    }
    assert {name: profile_ops.op_class(name) for name in cases} == cases
    shares = profile_ops.percentages(profile_ops.by_class({'aten::mm': 3, 'aten::add': 1}))
    assert list(shares)[:2] == ['linear/GEMM', 'element-wise'] and shares['linear/GEMM'] == 75
