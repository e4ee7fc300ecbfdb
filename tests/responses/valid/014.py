"""Connection: close from the backend"""

response = {'keep_alive': False}
