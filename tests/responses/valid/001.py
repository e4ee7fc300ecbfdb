"""200 with Content-Length"""

response = {'body': 'length',
 'content_length': 5,
 'headers': [(b'Content-Length', b'5'), (b'Server', b'backend/1')],
 'keep_alive': True,
 'reason': b'OK',
 'status': 200}
