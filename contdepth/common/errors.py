"""One error type for bad options, carrying the option's name.

Why: a message such as ``"n_steps: must be an integer >= 1, got 0"`` is how every command
answers a bad option (one line that names it, exit 2). When a caller passes an option on
under another name (``model_options.n_steps``, ``evaluate.examples``) it re-labels the error
with `OptionError.within` instead of editing strings.
"""

from __future__ import annotations


class OptionError(ValueError):
    """A bad option or argument: ``str(error)`` is ``"option: problem"``.

    Construct it as ``OptionError("n_steps", "must be an integer >= 1, got 0")`` or, for
    the many messages already written as one string, ``OptionError("n_steps: must be ...")``;
    the name is then the text before the first ``": "``.

    Attributes:
        option: the option's name as the caller knows it (``model_options.n_steps``).
        problem: what is wrong with it, and what would be right.
    """

    def __init__(self, option: str, problem: str | None = None) -> None:
        if problem is None:
            option, sep, rest = str(option).partition(": ")
            if not sep or " " in option:
                option, problem = "", str(option) + sep + rest
            else:
                problem = rest
        self.option = option
        self.problem = problem
        super().__init__(f"{option}: {problem}" if option else problem)

    def within(self, prefix: str) -> "OptionError":
        """The same error with the option named inside ``prefix`` (``n_steps`` -> ``model_options.n_steps``)."""
        name = f"{prefix}.{self.option}" if self.option else prefix
        error = type(self).__new__(type(self))
        OptionError.__init__(error, name, self.problem)
        return error

    def renamed(self, option: str) -> "OptionError":
        """The same problem under another option name (a CLI flag, a spec key)."""
        error = type(self).__new__(type(self))
        OptionError.__init__(error, option, self.problem)
        return error
