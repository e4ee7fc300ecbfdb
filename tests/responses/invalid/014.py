"""letters in the status"""

status = 502
