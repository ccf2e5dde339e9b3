from .complexity import Complexity, count_complexity
from .host import host_description

__all__ = ['Complexity', 'count_complexity', 'host_description']
