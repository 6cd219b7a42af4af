from django.urls import path

from segmentation.views import SegmentImageView

urlpatterns = [path("segment/", SegmentImageView.as_view(), name="segment-image")]
