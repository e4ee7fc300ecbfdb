"""not HTTP at all"""

status = 502
