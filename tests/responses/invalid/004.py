"""two-digit status"""

status = 502
