"""opendoctor: fault management and high availability for virtualised infrastructure."""

__version__ = "0.1.0"
