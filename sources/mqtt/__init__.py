"""The MQTT source: settings, the events it makes of messages, and the subscriber loop
(source). It imports the source SDK and pipelines.core.
"""
