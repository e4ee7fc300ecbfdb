"""Upgrade without Connection: upgrade is no upgrade"""

request = {'upgrade': False}
