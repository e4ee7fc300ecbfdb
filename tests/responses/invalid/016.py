"""control byte in the reason"""

status = 502
h11_differs = 'control-bytes'
