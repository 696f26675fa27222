"""itt-sweep: does intermediate-task training on code data improve zero-shot cross-lingual transfer on MBXP?"""

__version__ = "0.1.0"
