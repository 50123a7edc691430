from django.contrib import admin

from .models import Environment, Membership, Organization


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["name", "require_two_factor", "created_at"]
    list_filter = ["require_two_factor"]
    search_fields = ["name"]
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "organization", "role", "created_at"]
    list_filter = ["role", "organization"]
    search_fields = ["user__username", "user__email", "organization__name"]
    autocomplete_fields = ["user", "organization"]


@admin.register(Environment)
class EnvironmentAdmin(admin.ModelAdmin):
    list_display = ["name", "organization", "public_id", "created_by", "created_at"]
    list_filter = ["organization", "created_at"]
    search_fields = ["name", "organization__name", "public_id"]
    # The external ID is issued by the portal, never edited (issue 14).
    readonly_fields = ["public_id", "aws_external_id", "created_by", "created_at"]
