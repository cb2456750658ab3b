# nameko's services and our clients are green: patch before anything imports socket/ssl (PLATFORM_NOTES 8, 12).
import eventlet

eventlet.monkey_patch()
