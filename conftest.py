# nameko services and our clients are green: patch before anything imports socket/ssl (docs/architecture.md fact 7).
import eventlet

eventlet.monkey_patch()
