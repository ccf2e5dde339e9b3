"""RandomStateHook: every rank's generator states go into the checkpoint and come back."""
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import mmdualtoken  # noqa: F401  (allow-lists numpy arrays for weights_only loading)
from mmdualtoken.engine import random_state_hook
from mmdualtoken.engine.random_state_hook import (KEY, RandomStateHook, capture_random_states,
                                                  restore_random_states)

pytestmark = pytest.mark.slow  # Runner trainings and resumes


def draws():
    """Numbers from every generator the hook covers (gauss caches included)."""
    return dict(
        python=[random.random(), random.gauss(0, 1),
                random.gauss(0, 1)],
        numpy=[
            float(np.random.rand()),
            float(np.random.standard_normal()),
            float(np.random.standard_normal())
        ],
        torch=torch.rand(4))


def assert_same_draws(a, b):
    assert a['python'] == b['python']
    assert a['numpy'] == b['numpy']
    assert torch.equal(a['torch'], b['torch'])


def seeded_states(seed):
    """The states after seeding with ``seed`` and drawing one gaussian (so that Python's and
    numpy's cached second gaussian is part of the state)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    random.gauss(0, 1)
    np.random.standard_normal()
    return capture_random_states()


def scramble():
    random.seed(999)
    np.random.seed(999)
    torch.manual_seed(999)


def save_and_load(obj, tmp_path):
    path = tmp_path / 'states.pth'
    torch.save(obj, path)
    return torch.load(path, map_location='cpu', weights_only=True)


class FakeRunner:

    def __init__(self, resume=True):
        self._resume = resume
        self.messages = []
        self.logger = SimpleNamespace(info=self.messages.append)


def fake_dist(monkeypatch, rank, world_size):
    monkeypatch.setattr(random_state_hook, 'get_rank', lambda: rank)
    monkeypatch.setattr(random_state_hook, 'get_world_size', lambda: world_size)


def test_capture_restore_round_trip_through_a_safe_checkpoint(tmp_path):
    states = seeded_states(0)
    assert random.getstate()[2] is not None and np.random.get_state()[3] == 1  # cached gauss
    expected = draws()
    states = save_and_load(states, tmp_path)
    scramble()
    restore_random_states(states)
    assert_same_draws(draws(), expected)


def test_hook_writes_and_restores_through_a_safe_checkpoint(tmp_path):
    hook = RandomStateHook()
    seeded_states(1)
    checkpoint = dict(meta=dict(epoch=1))
    hook.before_save_checkpoint(FakeRunner(), checkpoint)  # one process: one rank
    assert len(checkpoint[KEY]['ranks']) == 1
    expected = draws()
    loaded = save_and_load(checkpoint, tmp_path)
    scramble()
    runner = FakeRunner()
    hook.after_load_checkpoint(runner, loaded)
    hook.before_train(runner)
    assert_same_draws(draws(), expected)
    assert len(runner.messages) == 1 and 'bit for bit' not in runner.messages[0]


def test_hook_does_nothing_without_resume(tmp_path):
    hook = RandomStateHook()
    seeded_states(1)
    checkpoint = {}
    hook.before_save_checkpoint(FakeRunner(), checkpoint)
    scramble()
    expected = draws()
    scramble()
    runner = FakeRunner(resume=False)  # load_from: weights only, a fresh run
    hook.after_load_checkpoint(runner, checkpoint)
    hook.before_train(runner)
    assert_same_draws(draws(), expected)
    assert runner.messages == []


def two_rank_checkpoint(tmp_path):
    """What rank 0 writes for a run of two processes (states gathered from both)."""
    ranks = [seeded_states(10), seeded_states(11)]
    expected = []
    for states in ranks:
        restore_random_states(states)
        expected.append(draws())
    return save_and_load({KEY: dict(ranks=ranks)}, tmp_path), expected


def resume_on_rank(monkeypatch, tmp_path, rank, world_size):
    """Resume from a 2-rank checkpoint as ``rank`` of ``world_size``: (message, expected)."""
    checkpoint, expected = two_rank_checkpoint(tmp_path)
    fake_dist(monkeypatch, rank, world_size)
    hook, runner = RandomStateHook(), FakeRunner()
    hook.after_load_checkpoint(runner, checkpoint)
    scramble()
    hook.before_train(runner)
    return runner.messages[0], expected


@pytest.mark.parametrize('rank', [0, 1])
def test_each_rank_restores_its_own_states(monkeypatch, tmp_path, rank):
    message, expected = resume_on_rank(monkeypatch, tmp_path, rank, 2)
    assert not torch.equal(expected[0]['torch'], expected[1]['torch'])  # ranks differ
    assert_same_draws(draws(), expected[rank])
    assert f'rank {rank} of the checkpoint' in message
    assert 'bit for bit' not in message


@pytest.mark.parametrize('rank, saved_rank', [(0, 0), (1, 1), (2, 0)])
def test_another_world_size_restores_rank_modulo_and_says_so(monkeypatch, tmp_path, rank,
                                                             saved_rank):
    message, expected = resume_on_rank(monkeypatch, tmp_path, rank, 3)
    assert_same_draws(draws(), expected[saved_rank])
    assert f'rank {saved_rank} of the checkpoint' in message
    assert 'written by 2 processes, this run has 3' in message
    assert 'does not repeat the uninterrupted run bit for bit' in message


def test_cuda_states_are_captured_and_restored_per_rank(monkeypatch, tmp_path):
    """With CUDA in use each rank's CUDA generator is saved and put back (faked here)."""
    cuda_state = {'current': None}
    restored = []
    monkeypatch.setattr(random_state_hook, '_cuda_in_use', lambda: True)
    monkeypatch.setattr(torch.cuda, 'get_rng_state', lambda *a, **k: cuda_state['current'].clone())
    monkeypatch.setattr(torch.cuda, 'set_rng_state',
                        lambda state, *a, **k: restored.append(state.clone()))
    ranks = []
    for rank in range(2):
        cuda_state['current'] = torch.full((16, ), 10 + rank, dtype=torch.uint8)
        ranks.append(seeded_states(20 + rank))
    assert all(
        torch.equal(r['cuda'], torch.full((16, ), 10 + i, dtype=torch.uint8))
        for i, r in enumerate(ranks))
    checkpoint = save_and_load({KEY: dict(ranks=ranks)}, tmp_path)
    for rank in range(2):
        fake_dist(monkeypatch, rank, 2)
        hook, runner = RandomStateHook(), FakeRunner()
        hook.after_load_checkpoint(runner, checkpoint)
        hook.before_train(runner)
        assert torch.equal(restored[-1], torch.full((16, ), 10 + rank, dtype=torch.uint8))
        assert 'CUDA' in runner.messages[0]
    assert len(restored) == 2
    # without CUDA in use nothing is captured, and a saved CUDA state is not applied
    monkeypatch.setattr(random_state_hook, '_cuda_in_use', lambda: False)
    assert capture_random_states()['cuda'] is None
    restore_random_states(checkpoint[KEY]['ranks'][0])
    assert len(restored) == 2


class OnGPU(torch.Tensor):
    """Stands in for a state tensor that mmengine's ``Runner.resume`` mapped onto a GPU (it
    loads the checkpoint with ``map_location`` the current CUDA device): ``.device`` says
    cuda:0, ``.numpy()`` raises as a CUDA tensor's does, ``.cpu()`` gives a plain CPU copy."""

    @property
    def device(self):
        return torch.device('cuda', 0)

    def numpy(self, *args, **kwargs):
        raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to "
                        'copy the tensor to host memory first.')

    def cpu(self, *args, **kwargs):
        return self.as_subclass(torch.Tensor).clone()


def on_gpu(value):
    if isinstance(value, torch.Tensor):
        return value.as_subclass(OnGPU)
    if isinstance(value, dict):
        return {k: on_gpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [on_gpu(v) for v in value]
    return value


def refuse_non_cpu(set_state):
    """torch's generators check in C++ that a state is a CPU byte tensor ("RNG state must be
    a torch.ByteTensor"); the stand-in's device is only visible in Python, so check there."""

    def checked(state, *args, **kwargs):
        if state.device.type != 'cpu' or type(state) is not torch.Tensor:
            raise TypeError('RNG state must be a torch.ByteTensor')
        return set_state(state, *args, **kwargs)

    return checked


def test_states_mapped_onto_a_gpu_by_resume_are_restored(monkeypatch, tmp_path):
    """--resume on a GPU: every saved state tensor arrives on cuda:0 (stand-in), and each
    generator gets its state back on the CPU, CUDA's included."""
    restored_cuda = []
    monkeypatch.setattr(random_state_hook, '_cuda_in_use', lambda: True)
    monkeypatch.setattr(torch.cuda, 'get_rng_state',
                        lambda *a, **k: torch.arange(16, dtype=torch.uint8))
    monkeypatch.setattr(torch.cuda, 'set_rng_state',
                        refuse_non_cpu(lambda state, *a, **k: restored_cuda.append(state)))
    monkeypatch.setattr(torch, 'set_rng_state', refuse_non_cpu(torch.set_rng_state))
    states = seeded_states(5)
    expected = draws()
    checkpoint = on_gpu({KEY: dict(ranks=[save_and_load(states, tmp_path)])})
    saved = checkpoint[KEY]['ranks'][0]
    assert saved['torch'].device.type == 'cuda' and saved['numpy']['key'].device.type == 'cuda'
    with pytest.raises(TypeError, match='numpy'):
        saved['numpy']['key'].numpy()  # what restoring used to call
    scramble()
    hook, runner = RandomStateHook(), FakeRunner()
    hook.after_load_checkpoint(runner, checkpoint)
    hook.before_train(runner)
    assert_same_draws(draws(), expected)
    assert len(restored_cuda) == 1 and torch.equal(restored_cuda[0],
                                                   torch.arange(16, dtype=torch.uint8))
    assert 'CUDA' in runner.messages[0]


def test_old_checkpoint_format_still_restores(tmp_path):
    """mmdualtoken 0.x wrote rank 0's CPU states only: python/numpy/torch, numpy's key an
    ndarray."""
    random.seed(30)
    np.random.seed(30)
    torch.manual_seed(30)
    random.gauss(0, 1)
    np.random.standard_normal()
    version, key, position, has_gauss, gauss = np.random.get_state()
    old = dict(
        python=random.getstate(),
        numpy=dict(
            version=version,
            key=key,
            position=int(position),
            gauss_next=float(gauss) if has_gauss else None),
        torch=torch.get_rng_state())
    assert isinstance(old['numpy']['key'], np.ndarray)
    expected = draws()
    checkpoint = save_and_load({KEY: old}, tmp_path)
    assert isinstance(checkpoint[KEY]['numpy']['key'], np.ndarray)
    scramble()
    hook, runner = RandomStateHook(), FakeRunner()
    hook.after_load_checkpoint(runner, checkpoint)
    hook.before_train(runner)
    assert_same_draws(draws(), expected)
    assert 'rank 0 of the checkpoint' in runner.messages[0]


@pytest.mark.parametrize('by_epoch', [True, False])
def test_ranks_gather_their_states_when_a_checkpoint_is_due(monkeypatch, by_epoch):
    """Only rank 0 saves (mmengine's save_checkpoint is master-only): every rank sends its
    states in after_train_epoch/iter, before the CheckpointHook, when it will save."""
    from mmengine.hooks import CheckpointHook
    from mmengine.runner.priority import get_priority
    assert get_priority(RandomStateHook.priority) < get_priority(CheckpointHook.priority)
    fake_dist(monkeypatch, 0, 2)
    other_rank = seeded_states(41)
    sent = []

    def all_gather_object(states):
        sent.append(states)
        return [states, other_rank]

    monkeypatch.setattr(random_state_hook, 'all_gather_object', all_gather_object)
    runner = FakeRunner()
    runner.hooks = [CheckpointHook(interval=2, by_epoch=by_epoch)]
    runner.epoch = runner.iter = 0
    runner.max_epochs = runner.max_iters = 10
    hook = RandomStateHook()

    def step():
        if by_epoch:
            hook.after_train_epoch(runner)
        else:
            hook.after_train_iter(runner, 0)

    step()  # after the first epoch / iteration: no checkpoint (interval 2), nothing sent
    assert sent == []
    runner.epoch = runner.iter = 1
    seeded_states(40)
    step()
    assert len(sent) == 1
    expected = draws()
    seeded_states(42)  # the generators move on before rank 0 saves: the sent states count
    checkpoint = {}
    hook.before_save_checkpoint(runner, checkpoint)
    ranks = checkpoint[KEY]['ranks']
    assert len(ranks) == 2 and ranks[1] is other_rank
    restore_random_states(ranks[0])
    assert_same_draws(draws(), expected)


def test_states_gathered_after_validation_serve_its_saves_until_training_goes_on(monkeypatch):
    """A best checkpoint is saved after validation, then mmengine saves the last checkpoint
    again (to record the best): every rank sends its states there, and both saves hold them.
    Once training goes on they are out of date: a save outside the CheckpointHook's moments
    holds rank 0's states only and says so."""
    fake_dist(monkeypatch, 0, 2)
    other_rank = seeded_states(41)
    monkeypatch.setattr(random_state_hook, 'all_gather_object', lambda states: [states, other_rank])
    runner = FakeRunner()
    warnings = []
    runner.logger.warning = warnings.append
    hook = RandomStateHook()
    hook.after_val_epoch(runner, metrics={})
    for save in ('best', 'the last again'):
        checkpoint = {}
        hook.before_save_checkpoint(runner, checkpoint)
        assert len(checkpoint[KEY]['ranks']) == 2 and not warnings, save
    hook.before_train_iter(runner, 0)
    hook.before_save_checkpoint(runner, checkpoint)
    assert len(checkpoint[KEY]['ranks']) == 1
    assert warnings and 'rank 0 only' in warnings[0]


def test_validation_does_not_disturb_the_training_stream():
    """before_val takes the states, after_val puts them back: training after a validation
    draws what it would have drawn without it (what a run resumed after it draws), and a
    checkpoint saved during validation (save_best) holds the states from before it."""
    seeded_states(50)
    without_validation = draws()
    seeded_states(50)
    hook, runner = RandomStateHook(), FakeRunner()
    hook.before_val(runner)
    draws()  # e.g. the val dataloader's base seed, test-time augmentation
    checkpoint = {}
    hook.before_save_checkpoint(runner, checkpoint)  # a best checkpoint, in after_val_epoch
    hook.after_val(runner)
    assert_same_draws(draws(), without_validation)
    scramble()
    restore_random_states(checkpoint[KEY]['ranks'][0])
    assert_same_draws(draws(), without_validation)
    # a save after validation holds the current states again
    checkpoint = {}
    hook.before_save_checkpoint(runner, checkpoint)
    expected = draws()
    restore_random_states(checkpoint[KEY]['ranks'][0])
    assert_same_draws(draws(), expected)


def test_ranks_gather_their_states_from_before_validation(monkeypatch):
    """In a distributed run the states sent for a best checkpoint are the training ones."""
    fake_dist(monkeypatch, 0, 2)
    sent = []
    monkeypatch.setattr(random_state_hook, 'all_gather_object',
                        lambda states: sent.append(states) or [states, states])
    hook, runner = RandomStateHook(), FakeRunner()
    seeded_states(60)
    hook.before_val(runner)
    expected = draws()
    hook.after_val_epoch(runner, metrics={})
    checkpoint = {}
    hook.before_save_checkpoint(runner, checkpoint)
    hook.after_val(runner)
    assert len(sent) == 1 and checkpoint[KEY]['ranks'][0] is sent[0]
    scramble()
    restore_random_states(sent[0])
    assert_same_draws(draws(), expected)


class AugmentingDataset(torch.utils.data.Dataset):
    """Each item draws from every generator, as random augmentations do."""
    metainfo = dict()

    def __len__(self):
        return 16

    def __getitem__(self, index):
        return index, random.random(), float(np.random.rand()), float(torch.rand(1))


class IterRunner(FakeRunner):
    """Enough of a Runner for mmengine's IterBasedTrainLoop.run: its hooks, a model that
    records what each iteration drew, and a save (CheckpointHook) after iteration
    ``save_at``."""

    def __init__(self, resume, save_at=None):
        super().__init__(resume)
        self.hook, self.save_at, self.checkpoint, self.steps = RandomStateHook(), save_at, None, []
        self.visualizer, self.val_loop, self.optim_wrapper = SimpleNamespace(), None, None
        self.model = SimpleNamespace(train=lambda: None, train_step=self.train_step)

    def train_step(self, batch, optim_wrapper):
        self.steps.append((batch, float(torch.rand(1))))  # drop path, Mixup...
        return {}

    def call_hook(self, name, **kwargs):
        getattr(self.hook, name)(self, **kwargs)
        if name == 'after_train_iter' and self.iter + 1 == self.save_at:
            self.checkpoint = {}
            self.hook.before_save_checkpoint(self, self.checkpoint)

    @property
    def iter(self):
        return self.train_loop.iter


def iter_loop(runner, max_iters, start_iter=0):
    from mmengine.runner import IterBasedTrainLoop
    torch.manual_seed(0)  # the Runner seeds before it builds the loop (and on resume)
    random.seed(0)
    np.random.seed(0)
    loader = torch.utils.data.DataLoader(AugmentingDataset(), batch_size=None, shuffle=False)
    runner.train_loop = IterBasedTrainLoop(runner, loader, max_iters=max_iters)
    runner.train_loop._iter = start_iter
    return runner.train_loop


def test_iteration_based_loop_gets_its_states_after_the_skipped_batches(tmp_path):
    """mmengine's IterBasedTrainLoop.run re-fetches (re-augments) the batches already
    trained after before_train: the hook restores the states after that skip, so the
    resumed iterations draw what the uninterrupted ones drew."""
    whole = IterRunner(resume=False, save_at=2)
    iter_loop(whole, max_iters=4).run()
    assert len(whole.steps) == 4 and whole.checkpoint is not None

    resumed = IterRunner(resume=True)
    loop = iter_loop(resumed, max_iters=4, start_iter=2)
    resumed.hook.after_load_checkpoint(resumed, save_and_load(whole.checkpoint, tmp_path))
    scramble()  # what the Runner's re-seeding and loading draw in between
    loop.run()
    assert resumed.steps == whole.steps[2:]  # same batches, same augmentations, same draws
    assert not isinstance(loop.dataloader_iterator, random_state_hook.RestoreAfterSkip)
    assert resumed.messages == [
        'Restored the random states of rank 0 of the checkpoint '
        '(Python, numpy, torch CPU), after the 2 batches the loop '
        'skips.'
    ]
