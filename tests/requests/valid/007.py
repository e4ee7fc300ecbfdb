"""Connection: close on HTTP/1.1"""

request = {'keep_alive': False}
