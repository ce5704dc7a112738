"""Import-only stand-in for torch (Strix, issue 17).

rknn-toolkit2 imports torch at module load (for its PyTorch front end and its GDQ
quantizer), but the ONNX path does not call it. Every torch name resolves to a class
that can be subclassed or used in annotations; *calling* or instantiating one raises,
so any real use of torch fails loudly instead of computing something wrong.
"""
import importlib.abc, importlib.machinery, sys, types

class TorchStubUsed(RuntimeError):
    pass

_IMPORT_TIME_DECORATORS = {'torch.no_grad'}

class _StubMeta(type):
    def __getattr__(cls, name):
        if name.startswith('__'):
            raise AttributeError(name)
        return _make(cls.__qualname__ + '.' + name)
    def __call__(cls, *a, **k):
        # Decorator factories applied at import time (e.g. `@torch.no_grad()`) get an
        # identity decorator; the decorated function itself never touches torch.
        if cls.__qualname__ in _IMPORT_TIME_DECORATORS:
            return lambda f: f
        raise TorchStubUsed('%s was called: this code path needs the real torch '
                            '(pip install torch)' % cls.__qualname__)

def _make(name):
    return _StubMeta(name, (object,), {'__qualname__': name})

class _StubModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith('__'):
            raise AttributeError(name)
        return _make(self.__name__ + '.' + name)

class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        if fullname.startswith('torch.'):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None
    def create_module(self, spec):
        m = _StubModule(spec.name)
        m.__path__ = []
        return m
    def exec_module(self, module):
        pass

sys.meta_path.insert(0, _Finder())
__version__ = '0.0.0+strix-stub'
_self = sys.modules[__name__]
_self.__class__ = _StubModule
