"""HTTP/1.0 without Host: fine, not kept alive"""

request = {'headers': [], 'host': b'', 'keep_alive': False, 'version': b'1.0'}
