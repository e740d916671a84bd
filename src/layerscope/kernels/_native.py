"""Native C++ backend (``layerscope._C``). Registered when the extension was built."""
