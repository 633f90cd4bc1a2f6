"""Webhooks through which conversations arrive from other platforms (SPEC §5).

One module per platform, each holding its wire format (parsing, answers) and
a thin view; the domain work is in ``chat.services``.
"""
