"""simplest HTTP/1.1 request"""

request = {'body': 'none',
 'headers': [(b'Host', b'example.com')],
 'host': b'example.com',
 'keep_alive': True,
 'method': b'GET',
 'path': b'/',
 'target': b'/',
 'version': b'1.1'}
