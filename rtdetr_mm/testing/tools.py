"""Import a script of ``tools/`` as a module, so tests call its ``main(argv)``."""
import importlib.util
import os.path as osp
from types import ModuleType

from . import ROOT


def load_tool(relative_path: str) -> ModuleType:
    """``tools/<relative_path>.py`` as a fresh module (``'train'``,
    ``'misc/check_dataset'``, ``'deployment/export_onnx'``)."""
    name = 'rtdetr_mm_tools_' + relative_path.replace('/', '_')
    spec = importlib.util.spec_from_file_location(
        name, osp.join(ROOT, 'tools', f'{relative_path}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
