"""CPU kernels of our own, compiled ahead of time into MindSpore AOT custom operators
(``ops.Custom(..., func_type="aot")``): the C++ sources ship with the package and are compiled
once per machine into the cache folder at first use (``build.py``); without a compiler the model
keeps MindSpore's own operators and the log says so."""
