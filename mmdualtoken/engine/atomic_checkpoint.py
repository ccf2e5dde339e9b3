"""Checkpoints that a kill at any moment cannot damage.

mmengine 0.10's :class:`~mmengine.hooks.CheckpointHook` saves in this order: it removes the
oldest checkpoint (``max_keep_ckpts``), writes the new one in place through the file backend
(``LocalBackend.put`` opens the final name and writes), then rewrites ``last_checkpoint``
with a plain ``open('w')``. A process killed during the write leaves a truncated
``epoch_N.pth`` and a ``last_checkpoint`` naming a checkpoint that was already removed (with
``max_keep_ckpts=1``, nothing to resume from); killed while the pointer is rewritten, an
empty ``last_checkpoint``.

:class:`AtomicCheckpointHook` keeps everything the CheckpointHook does and changes two
things:

* every file is written to a temporary name next to it (``<name>.tmp-<pid>``), flushed,
  fsynced and renamed over the final name with ``os.replace`` (atomic on POSIX), then the
  folder is fsynced: a file under its final name is always complete. Local folders use
  :class:`AtomicLocalBackend` (registered as ``atomic_local``) for the checkpoints; other
  backends (``s3://``...) are left as configured;
* the order is: new checkpoint, then ``last_checkpoint``, then removal of the checkpoints
  beyond ``max_keep_ckpts``. At every moment ``last_checkpoint`` names a complete checkpoint.
  Likewise with ``save_best``: the new best checkpoint is written before the previous best
  is removed (mmengine removes it first).

Temporary files of a killed save are removed when the next run starts (a log line names
them). ``tools/train.py --resume`` refuses a ``last_checkpoint`` naming a missing file
(mmdualtoken.launch).
"""
import contextlib
import glob
import os
import os.path as osp
from typing import Union

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook
from mmengine.registry import HOOKS

TMP_MARK = '.tmp-'


def temp_path(path: str) -> str:
    """Where :func:`atomic_write` writes ``path`` before renaming it (unique per process)."""
    return f'{path}{TMP_MARK}{os.getpid()}'


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder or '.', os.O_RDONLY)
    except OSError:  # not possible on every file system / OS: the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(data: Union[bytes, str], path: str) -> None:
    """Write ``data`` to ``path`` so that ``path`` holds either its old content or all of
    ``data``, whenever the process dies: temporary file, fsync, ``os.replace``."""
    folder = osp.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, 'wb') as f:
            f.write(data.encode('utf-8') if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(folder)


@register_backend('atomic_local')
class AtomicLocalBackend(LocalBackend):
    """mmengine's LocalBackend whose ``put``/``put_text`` replace the file atomically.

    Select it with ``backend_args=dict(backend='atomic_local')`` (the
    :class:`AtomicCheckpointHook` does for local folders).
    """

    _deferred = None  # the paths whose removal waits, inside removals_deferred()

    def put(self, obj: bytes, filepath) -> None:
        atomic_write(obj, str(filepath))

    def remove(self, filepath) -> None:
        if self._deferred is None:
            return super().remove(filepath)
        self._deferred.append(str(filepath))

    @contextlib.contextmanager
    def removals_deferred(self, keep=()):
        """Inside it ``remove`` only records the path; on leaving, the recorded files are
        removed, except those in ``keep`` (evaluated then: a callable returning paths)."""
        self._deferred = []
        try:
            yield
        finally:
            deferred, self._deferred = self._deferred, None
        kept = set(map(str, keep()))
        for path in deferred:
            if path not in kept and self.isfile(path):
                super().remove(path)

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        atomic_write(obj.encode(encoding), str(filepath))


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """mmengine's CheckpointHook with atomic writes and a kill-safe order.

    Same arguments as :class:`~mmengine.hooks.CheckpointHook`. Saving goes: checkpoint
    (atomic), ``last_checkpoint`` (atomic), then the outdated checkpoints are removed, so a
    kill at any moment leaves ``last_checkpoint`` naming a complete checkpoint. With a local
    ``out_dir`` and no ``backend_args``, checkpoints are written through
    :class:`AtomicLocalBackend`.
    """

    def before_train(self, runner) -> None:
        atomic = self.backend_args is None and self.file_client_args is None
        super().before_train(runner)
        if atomic and type(self.file_backend) is LocalBackend:
            self.backend_args = dict(backend='atomic_local')
            self.file_backend = AtomicLocalBackend()
        if is_main_process():
            self._remove_stale_temp_files(runner)

    def _remove_stale_temp_files(self, runner) -> None:
        """Temporary files of saves killed in an earlier run (never a finished file)."""
        folders = {runner.work_dir}
        if isinstance(self.file_backend, LocalBackend):
            folders.add(self.out_dir)
        stale = sorted({
            p
            for folder in folders
            for p in glob.glob(osp.join(glob.escape(folder), f'*{TMP_MARK}*'))
        })
        for path in stale:
            os.remove(path)
        if stale:
            runner.logger.warning(
                f'Removed {len(stale)} temporary file(s) of a save that did not finish '
                f'(the process was stopped while writing): '
                f'{", ".join(osp.basename(p) for p in stale)}')

    def _best_paths(self) -> list:
        """The best checkpoints now (one per ``save_best`` key)."""
        paths = [getattr(self, 'best_ckpt_path', None)]
        paths += getattr(self, 'best_ckpt_path_dict', {}).values()
        return [p for p in paths if p]

    def _save_best_checkpoint(self, runner, metrics) -> None:
        # mmengine removes the previous best checkpoint, then writes the new one: a kill in
        # between would leave none. Here the removal waits until the new one is complete.
        if not isinstance(self.file_backend, AtomicLocalBackend):
            return super()._save_best_checkpoint(runner, metrics)
        with self.file_backend.removals_deferred(keep=self._best_paths):
            super()._save_best_checkpoint(runner, metrics)

    def _save_checkpoint_with_step(self, runner, step, meta):
        # mmengine's bookkeeping (keep_ckpt_ids goes into the checkpoint's message hub), but
        # the outdated checkpoint is removed only after the new one and the pointer are in
        # place
        outdated = None
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                outdated = self.keep_ckpt_ids.popleft()
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))

        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)

        runner.save_checkpoint(
            self.out_dir,
            ckpt_filename,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args)

        if not is_main_process():
            return
        atomic_write(self.last_ckpt, osp.join(runner.work_dir, 'last_checkpoint'))

        if outdated is not None and outdated != step:
            path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(outdated))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):  # checkpoints saved by deepspeed
                self.file_backend.rmtree(path)
