"""tab as a request-line separator"""

status = 400
