"""Argument types shared by the command-line tools."""
import argparse


def positive_int(flag):
    """An argparse type: the text as an int of at least 1, else an error naming flag."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise argparse.ArgumentTypeError(f"{flag} must be a positive integer, got {text!r}")
        return value
    return parse
