# -*- coding: utf-8 -*-
"""pip install ./examples/python  (Python 2.7 and 3.6+; one module, no dependencies).

A setup.py, not pyproject metadata alone: the pip and setuptools of Python 2.7 cannot read
a [project] table. pyproject.toml only names the build backend for modern pip.
"""

import io
import os
import re

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))

with io.open(os.path.join(HERE, "csmutex_sidecar.py"), encoding="utf-8") as f:
    VERSION = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)

with io.open(os.path.join(HERE, "README.md"), encoding="utf-8") as f:
    README = f.read()

setup(
    name="csmutex-sidecar",
    version=VERSION,
    description="Lock a CloudShell reservation from Python drivers through csmutex (sidecar or csmutex run)",
    long_description=README,
    long_description_content_type="text/markdown",
    py_modules=["csmutex_sidecar"],
    python_requires=">=2.7, !=3.0.*, !=3.1.*, !=3.2.*, !=3.3.*, !=3.4.*, !=3.5.*",
    options={"bdist_wheel": {"universal": True}},
    classifiers=[
        "Programming Language :: Python :: 2",
        "Programming Language :: Python :: 2.7",
        "Programming Language :: Python :: 3",
        "Operating System :: OS Independent",
    ],
)
