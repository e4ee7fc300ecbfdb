"""204 has no body"""

response = {'body': 'none', 'keep_alive': True, 'status': 204}
