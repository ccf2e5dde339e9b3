"""The machine a report was measured on, in one line."""
import os
import os.path as osp
import platform


def host_description(torch_version: str) -> str:
    """CPU model, logical cores, OS, Python and ``torch_version``."""
    cpu = platform.processor() or platform.machine()
    if osp.exists('/proc/cpuinfo'):
        with open('/proc/cpuinfo') as f:
            cpu = next((ln.split(':', 1)[1].strip() for ln in f if ln.startswith('model name')),
                       cpu)
    return (f'{cpu}, {os.cpu_count()} logical cores; {platform.system()} {platform.release()}; '
            f'Python {platform.python_version()}, torch {torch_version}')
