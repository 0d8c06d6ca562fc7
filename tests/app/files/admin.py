from django.contrib import admin

from .models import Category, EncodingProfile, Media


@admin.register(Media)
class MediaAdmin(admin.ModelAdmin):
    list_display = ("id", "title", "user", "encoding_status", "duration", "add_date")


admin.site.register(EncodingProfile)
admin.site.register(Category)
