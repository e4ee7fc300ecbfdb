"""WebSocket upgrade"""

request = {'keep_alive': True, 'upgrade': True}
