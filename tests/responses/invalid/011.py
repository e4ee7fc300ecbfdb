"""control byte in a field value"""

status = 502
h11_differs = 'control-bytes'
