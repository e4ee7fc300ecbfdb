"""control byte 0x01 in a field value"""

status = 400
h11_differs = 'control-bytes'
