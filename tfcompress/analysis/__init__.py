"""Analysis: which layers can take how much compression (`sensitivity`)."""

from tfcompress.analysis.sensitivity import (TECHNIQUES, log_sensitivity, plot_sensitivity,
                                             sensitivity)

__all__ = ["TECHNIQUES", "log_sensitivity", "plot_sensitivity", "sensitivity"]
