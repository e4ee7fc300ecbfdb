"""empty reason phrase after the SP"""

response = {'reason': b''}
