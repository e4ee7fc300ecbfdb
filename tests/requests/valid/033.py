"""WebSocket upgrade, protocol name in another case (RFC 6455 4.2.1: case-insensitive)"""

request = {'keep_alive': True, 'upgrade': True}
