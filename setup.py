"""Builds hisa's extension module (_hisa) with the project's CMake for `pip install .`: the C++
library, with the CUDA backend where nvcc is found (HISA_CUDA=AUTO; ON or OFF to insist), and the
pybind11 module for the interpreter running the build. Metadata lives in pyproject.toml."""
import os
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        if shutil.which("cmake") is None:
            raise RuntimeError("building hisa needs cmake (Debian: apt-get install cmake ninja-build; "
                               "or HISA_PYTHON=1 bash scripts/deps.sh)")
        build_dir = os.path.join(os.path.abspath(self.build_temp), "cmake")
        os.makedirs(build_dir, exist_ok=True)
        args = ["-DCMAKE_BUILD_TYPE=Release", "-DHISA_PYTHON=ON", "-DHISA_TESTS=OFF", "-DHISA_CLI=OFF",
                "-DHISA_CUDA=" + os.environ.get("HISA_CUDA", "AUTO"),
                "-DPython3_EXECUTABLE=" + sys.executable]
        if shutil.which("ninja"):
            args += ["-G", "Ninja"]
        args += os.environ.get("HISA_CMAKE_ARGS", "").split()
        subprocess.check_call(["cmake", "-S", ROOT, "-B", build_dir] + args)
        subprocess.check_call(["cmake", "--build", build_dir, "--target", "_hisa", "-j", str(os.cpu_count() or 1)])
        built = os.path.join(build_dir, "python", "hisa")
        so = [f for f in os.listdir(built) if f.startswith("_hisa") and f.endswith((".so", ".pyd"))]
        if len(so) != 1:
            raise RuntimeError("expected one _hisa module in %s, found %s" % (built, so))
        dest = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copyfile(os.path.join(built, so[0]), dest)


setup(ext_modules=[CMakeExtension("hisa._hisa")], cmdclass={"build_ext": CMakeBuild})
