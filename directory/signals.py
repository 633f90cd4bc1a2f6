"""Signals the directory sends for changes made in bulk (merge, import), where
Django's model signals do not fire. ``identifiers`` is a set of normalised
identifier values, or None for "anything may have changed"."""

from django.dispatch import Signal

directory_changed = Signal()
