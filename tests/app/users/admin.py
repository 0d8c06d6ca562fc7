from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from .models import User


@admin.register(User)
class TestAppUserAdmin(UserAdmin):
    fieldsets = (*UserAdmin.fieldsets, ("Test app", {"fields": ("name",)}))
